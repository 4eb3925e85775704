-- Keys of at most 2,048 bytes (MAX_KEY_BYTES in src/outbox/key-size.ts, which says why; a
-- test keeps the numbers here equal to it), so that no key can stop more than its own rows.
-- `:schema` is replaced by the (quoted) schema name when migrations run. Safe to run again
-- (the roles test applies the latest migration a second time).
--
-- A B-tree entry may not exceed 2,704 bytes (after compression). A row with a longer,
-- incompressible key inserted fine, but the relay could then never mark it failed or dead:
-- the update had to add the key to messages_blocking_key_idx and failed (SQLSTATE 54000),
-- and the shard retried its batch forever, every other key of the shard with it.

-- Blocking rows of keys within the limit only. A longer key's rows are never published
-- (the relay marks each dead at once, whatever its state: see the shard worker), so none of
-- them needs holding back, and marking one dead never touches a key index. Every query
-- that reads this index repeats `octet_length(key) <= 2048`, which lets the planner use it.
drop index if exists :schema.messages_blocking_key_idx;
create index messages_blocking_key_idx on :schema.messages (key, id)
  where state in ('failed', 'dead') and key is not null and octet_length(key) <= 2048;

-- messages_held_idx stays as it is: it must hold every held row (the start-up topic check,
-- the on-call reads and the release of keyless held rows read held rows through it). The
-- claim never holds a row with a longer key, and one held before this migration (a
-- compressible key fitted) is let go by the release, as nothing indexed blocks it.

-- New keys over the limit are refused wherever a key is written (INSERT, COPY, UPDATE ... SET
-- key), with SQLSTATE 23514 like a CHECK would. A trigger and not a CHECK constraint, for
-- the reason migration 0005 gives: PostgreSQL checks a CHECK constraint, NOT VALID or not,
-- on every UPDATE of a row, so a row with a long key already in the table could then not
-- be marked at all (not even dead, with its reason); the trigger leaves existing rows
-- alone and is instant on a big table.
create or replace function :schema.refuse_oversized_key() returns trigger
language plpgsql as $$
begin
  raise exception 'key of %.messages is % bytes, over the limit of 2048 bytes', tg_table_schema, octet_length(new.key)
    using errcode = 'check_violation', constraint = 'messages_key_size',
          schema = tg_table_schema, table = tg_table_name, column = 'key',
          hint = 'the outbox keeps per-key order through indexes of keys; use a shorter key, such as a hash of this one';
end;
$$;

drop trigger if exists messages_key_size on :schema.messages;
create trigger messages_key_size
  before insert or update of key on :schema.messages
  for each row
  when (octet_length(new.key) > 2048)
  execute function :schema.refuse_oversized_key();
