-- Dead letters handled by on-call engineers from the CLI: a replay requested of the group's
-- running consumers (only they have the handler), and a discard kept for audit.
-- `:schema` is replaced by the (quoted) schema name when migrations run.

-- replay_requested_at: set by `outbox-relay dead-letters replay`; a running consumer of the
-- group runs the record through its handler and clears it (replayed_at on success, the
-- error and attempts updated on failure). discarded_at: settled without applying it, by
-- `outbox-relay dead-letters discard`, with the reason; no longer pending.
alter table :schema.dead_letters
  add column replay_requested_at timestamptz,
  add column discarded_at timestamptz,
  add column discard_reason text;

drop index :schema.dead_letters_pending_idx;
create index dead_letters_pending_idx on :schema.dead_letters (group_id, id) where replayed_at is null and discarded_at is null;
create index dead_letters_replay_requested_idx on :schema.dead_letters (group_id, id)
  where replay_requested_at is not null and replayed_at is null and discarded_at is null;
