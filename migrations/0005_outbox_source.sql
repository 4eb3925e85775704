-- Source identity of this outbox, and the header names only the relay may set.
-- `:schema` is replaced by the (quoted) schema name when migrations run.

-- Outbox ids are only unique within one outbox: two services with outboxes of their own
-- that publish to one topic reuse the same ids. Every record therefore also carries this
-- outbox's source id (header `outbox-source`), and a consumer identifies an event by
-- (source, id). One row, written here: stable for as long as this schema lives, distinct
-- between databases (and between schemas of one database). An operator may set a readable
-- name before the first relay starts; changing it later makes re-published events look new.
create table :schema.outbox_source (
  singleton  boolean     primary key default true,
  source_id  text        not null default gen_random_uuid()::text,
  created_at timestamptz not null default now(),
  constraint outbox_source_singleton check (singleton),
  -- Sent as a Kafka header value and logged: short, printable, never empty.
  constraint outbox_source_id_legal check (
    char_length(source_id) between 1 and 200 and source_id !~ '[[:cntrl:]]'
  )
);

comment on table :schema.outbox_source is 'Identity of this outbox, sent by the relay as header outbox-source on every record';

insert into :schema.outbox_source default values;

-- The headers the relay sets on every record itself (HEADER in src/outbox/event.ts; a test
-- keeps the two lists equal). A row's own headers of these names (in any letter case) would
-- otherwise reach Kafka next to the relay's and let a row forge its identity.
create function :schema.reserved_header_names() returns text[]
language sql immutable parallel safe as $$
  select array['outbox-id', 'outbox-source', 'created-at', 'event-type', 'aggregate-type',
               'aggregate-id', 'schema-version', 'traceparent']
$$;

-- True when no key of a headers object is reserved. Anything but an object counts as free:
-- messages_headers_object refuses those, with its own message.
create function :schema.headers_free_of_reserved(headers jsonb) returns boolean
language sql immutable parallel safe as $$
  select case when jsonb_typeof(headers) = 'object'
              then not exists (select 1 from jsonb_object_keys(headers) as k(name)
                                where lower(k.name) = any (:schema.reserved_header_names()))
              else true end
$$;

create function :schema.refuse_reserved_headers() returns trigger
language plpgsql as $$
begin
  raise exception 'headers of %.messages must not use names the relay sets: %', tg_table_schema,
    (select string_agg(k.name, ', ') from jsonb_object_keys(new.headers) as k(name)
      where lower(k.name) = any (:schema.reserved_header_names()))
    using errcode = 'check_violation', constraint = 'messages_headers_unreserved',
          schema = tg_table_schema, table = tg_table_name, column = 'headers',
          hint = 'the relay sets these itself; event metadata goes in the columns event_type, aggregate_type, aggregate_id, schema_version, traceparent';
end;
$$;

-- A trigger and not a CHECK constraint, on purpose. PostgreSQL checks a CHECK constraint on
-- every UPDATE of a row, even one marked NOT VALID and even when the update leaves headers
-- alone: a row written before this migration with a reserved name would make the relay's
-- own "mark sent" fail after its record reached Kafka, and wedge its shard. This trigger
-- refuses the names wherever headers are written (INSERT, COPY, UPDATE ... SET headers) with
-- SQLSTATE 23514 like a CHECK would, leaves existing rows alone, and is instant on a big
-- table; the relay drops such names from the older rows (and logs them).
create trigger messages_headers_unreserved
  before insert or update of headers on :schema.messages
  for each row
  when (not :schema.headers_free_of_reserved(new.headers))
  execute function :schema.refuse_reserved_headers();
