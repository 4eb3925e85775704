-- One relay group serves an outbox at a time, and checkpoint cursors know which incarnation
-- of the checkpoint topic they point into.
-- `:schema` is replaced by the (quoted) schema name when migrations run.

-- Two relay groups on one outbox would each publish every row: their shards, leases and
-- transactional ids are separate. So the schema records the group that serves it (`active`,
-- at most one, enforced by the unique index); a relay of another group refuses to start,
-- unless it is told to take over from the active group. A take-over sets `successor` on the
-- old group (its relays then stop renewing and taking leases, and leave), waits until the
-- old group has no live relay and no unexpired lease, fences the old transactional ids,
-- applies the old checkpoints, and only then makes the new group active and the old one
-- retired, in one transaction.
alter table :schema.relay_groups
  add column active boolean not null default false,
  add column successor text,
  add column retired_at timestamptz,
  add constraint relay_groups_successor_other check (successor is null or successor <> relay_group);

create unique index relay_groups_one_active on :schema.relay_groups ((true)) where active;

-- A schema migrated while one or more groups existed: the group seen alive last serves it.
update :schema.relay_groups set active = true
 where relay_group = (
   select g.relay_group
     from :schema.relay_groups g
     left join :schema.relay_members m on m.relay_group = g.relay_group
    group by g.relay_group, g.created_at
    order by max(m.heartbeat_at) desc nulls last, g.created_at desc
    limit 1);

-- The Kafka topic id of the checkpoint topic the cursor's offset belongs to. A checkpoint
-- topic deleted and created again starts its offsets from zero: a cursor of the old
-- incarnation would skip the new one's checkpoints, so a relay that finds another topic id
-- (or none) reconciles from the beginning of the partition.
alter table :schema.relay_shards add column checkpoint_topic_id text;
