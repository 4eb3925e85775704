-- Relay coordination: shard leases with fencing tokens, live relay members, and for each
-- shard the last Kafka checkpoint record whose rows are marked sent here.

-- One row per relay group, written by its first relay. The shard count is fixed here (a
-- relay with another count refuses to start: keys would change shards mid-flight), and
-- instance_id is stamped into every checkpoint record so that a relay never marks its rows
-- from checkpoints written for another database that uses the same group name on the
-- same Kafka cluster.
create table :schema.relay_groups (
  relay_group      text        primary key,
  shards           integer     not null check (shards > 0),
  instance_id      uuid        not null default gen_random_uuid(),
  checkpoint_topic text        not null,
  created_at       timestamptz not null default now()
);

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
