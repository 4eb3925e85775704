import { MAX_KEY_BYTES } from '../outbox/key-size.js';

// Read-only statements of the on-call commands (outbox-relay stuck / show / status) and the
// unsent gauges. Filters are bound parameters, never part of the text.


/**
 * Every unsent row, through the three partial indexes that together cover them (publishable,
 * held, dead): the cost follows the unsent rows, however many sent rows are kept. A plain
 * `state in (...)` filter could use none of them and would scan the table.
 */
const unsent = (q: string) => `(
  select * from ${q}.messages where state in ('pending', 'failed') and not held
  union all
  select * from ${q}.messages where held and state in ('pending', 'failed')
  union all
  select * from ${q}.messages where state = 'dead')`;

/**
 * Unsent rows older than `$1` ms, oldest first, with what holds each back: its own state,
 * or the first earlier failed or dead row of its key (through the index of such rows, whose
 * predicate the query repeats; a key over MAX_KEY_BYTES has none: its rows are each dead).
 */
export const stuckRowsSql = (q: string) => `
select m.id::text, m.topic, m.key, m.state, m.held, m.attempts, m.last_error, m.created_at, m.next_attempt_at,
       extract(epoch from now() - m.created_at)::float8 as age_seconds,
       (select min(e.id)::text from ${q}.messages e
         where m.key is not null and e.key = m.key and e.id < m.id and e.state in ('failed', 'dead')
           and octet_length(e.key) <= ${MAX_KEY_BYTES}) as blocked_by
  from ${unsent(q)} m
 where m.created_at < now() - $1::bigint * interval '1 millisecond'
   and ($2::text is null or m.state = $2::text)
   and ($3::text is null or m.topic = $3::text)
   and ($4::text is null or m.key = $4::text)
 order by m.id
 limit $5::int`;

/**
 * Whether the outbox holds any row of topic `$1`. No index leads by topic, so this may read
 * the table: it is asked only when a filter by topic matched nothing.
 */
export const knownTopicSql = (q: string) => `
select exists (select 1 from ${q}.messages where topic = $1::text) as known`;

/** Whether any unsent row (pending, failed or dead) has key `$1`: read through the small partial indexes of unsent rows. */
export const unsentKeySql = (q: string) => `
select exists (select 1 from ${unsent(q)} m where m.key = $1::text) as known`;

/** One row in full, the payload cut to `$2` bytes. */
export const showRowSql = (q: string) => `
select m.id::text, m.topic, m.key, m.state, m.held, m.attempts, m.last_error, coalesce(m.errors, '[]'::jsonb) as errors, m.created_at, m.next_attempt_at, m.sent_at,
       m.kafka_partition, m.kafka_offset::text, m.headers, m.event_type, m.aggregate_type, m.aggregate_id,
       m.schema_version, m.traceparent, octet_length(m.payload) as payload_bytes, substring(m.payload from 1 for $2::int) as payload_head
  from ${q}.messages m
 where m.id = $1::bigint`;

/** Unsent rows per topic and state, with the oldest one's age. */
export const unsentByTopicSql = (q: string) => `
select topic, state, count(*)::int as rows, extract(epoch from now() - min(created_at))::float8 as oldest_seconds
  from ${unsent(q)} m
 group by topic, state
 order by topic, state`;

/** Unsent rows per shard of the serving group's layout (`$1` shards). */
export const unsentByShardSql = (q: string) => `
select (case when key is null then id % $1::int else (hashtext(key) & 2147483647) % $1::int end)::int as shard,
       count(*) filter (where state = 'pending')::int as pending,
       count(*) filter (where state = 'failed')::int as failed,
       count(*) filter (where state = 'dead')::int as dead,
       extract(epoch from now() - min(created_at))::float8 as oldest_seconds
  from ${unsent(q)} m
 group by 1
 order by 1`;

/** Relay groups, the serving one first. */
export const relayGroupsSql = (q: string) => `
select relay_group, shards, active, successor, retired_at, checkpoint_topic
  from ${q}.relay_groups
 order by active desc, relay_group`;

/** A group's shard leases. */
export const shardOwnersSql = (q: string) => `
select shard, owner, updated_at as since, lease_expires_at, lease_expires_at > now() as live
  from ${q}.relay_shards
 where relay_group = $1::text
 order by shard`;

/** A group's members and how long ago each beat. */
export const relayMembersSql = (q: string) => `
select relay_id, started_at, extract(epoch from now() - heartbeat_at)::float8 as heartbeat_seconds
  from ${q}.relay_members
 where relay_group = $1::text
 order by relay_id`;

/** Stored consumer offsets, and dead letters not replayed, per group. */
export const consumerOffsetsSql = (q: string) => `
select group_id, topic, partition, next_offset::text
  from ${q}.consumer_offsets
 order by group_id, topic, partition`;

export const pendingDeadLettersSql = (q: string) => `
select group_id, count(*)::int as pending from ${q}.dead_letters where replayed_at is null and discarded_at is null group by group_id`;

/**
 * Topics of the rows the relay is going to publish, for the start-up check of target
 * topics. Only pending and failed rows, through the partial indexes of publishable and of
 * held rows, so the work is proportional to the unsent rows, however many sent rows are
 * retained (a `state <> 'sent'` filter could use no index and would scan the table).
 */
export function unsentTopicsSql(q: string): string {
  return `
select distinct t.topic from (
  select m.topic from ${q}.messages m where m.state in ('pending', 'failed') and not m.held
  union all
  select m.topic from ${q}.messages m where m.held
) t
 limit 1000`;
}
