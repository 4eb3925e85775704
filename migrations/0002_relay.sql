-- Relay coordination: shard leases with fencing tokens, live relay members, and for each
-- shard the last Kafka checkpoint record whose rows are marked sent here.

create table :schema.relay_shards (
  relay_group       text        not null,
  shard             integer     not null,
  -- Relay id holding the lease, or NULL when free.
  owner             text,
  -- Bumped on every take-over; a relay acts on a shard only under the token it was given.
  fencing_token     bigint      not null default 0,
  lease_expires_at  timestamptz,
  -- Offset of the last checkpoint record (in the relay group's checkpoint topic) applied
  -- to messages; reconciliation reads the checkpoint partition after it.
  checkpoint_partition integer,
  checkpoint_offset bigint      not null default -1,
  updated_at        timestamptz not null default now(),
  primary key (relay_group, shard),
  constraint relay_shards_shard_nonnegative check (shard >= 0)
);

create table :schema.relay_members (
  relay_group  text        not null,
  relay_id     text        not null,
  started_at   timestamptz not null default now(),
  heartbeat_at timestamptz not null default now(),
  primary key (relay_group, relay_id)
);
