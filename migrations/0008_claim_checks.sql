-- The built-in claim-check store: bodies too large for a Kafka record, kept here and sent
-- as a reference (id, size, sha256) that consumers resolve.
-- `:schema` is replaced by the (quoted) schema name when migrations run.

-- A body is written in the writer's own transaction, next to its outbox row (message_id):
-- a rolled-back transaction leaves neither. A body is kept while its row is unsent, and
-- then as long as sent rows are kept (the relay's retention), since consumers may read the
-- record until then.
create table :schema.claim_checks (
  id         uuid        primary key default gen_random_uuid(),
  message_id bigint,
  body       bytea       not null,
  size       bigint      not null,
  sha256     text        not null,
  created_at timestamptz not null default now(),
  constraint claim_checks_size_matches check (size = octet_length(body)),
  constraint claim_checks_sha256_hex check (sha256 ~ '^[0-9a-f]{64}$')
);

-- Large bodies are often compressed already; storing them as they are saves the attempt.
alter table :schema.claim_checks alter column body set storage external;

create index claim_checks_created_at_idx on :schema.claim_checks (created_at);
