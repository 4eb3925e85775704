import pg from 'pg';

/**
 * Compare-and-set of the next offset: moves it from `$4` (read at the start of this
 * transaction) to `$5`. This is the fencing check under the row lock: UPDATE locks the row
 * and, when another transaction changed it meanwhile, re-evaluates `next_offset = $4`
 * against the committed version. No row returned means another consumer (or an operator)
 * moved the offset: the caller rolls back everything the batch did.
 */
export function advanceOffsetSql(q: string): string {
  return `
update ${q}.consumer_offsets
   set next_offset = $5::bigint, updated_at = now()
 where group_id = $1::text and topic = $2::text and partition = $3::int
   and next_offset = $4::bigint
returning next_offset`;
}

/**
 * Stored next offsets (and the topic incarnation they belong to) for a set of partitions of
 * one group, read on assignment (before any record is fetched) and by the periodic check.
 * Parallel arrays keep it to one round trip whatever the number of partitions; partitions
 * without a row are simply absent.
 */
export function loadOffsetsSql(q: string): string {
  return `
select o.topic, o.partition, o.next_offset, o.topic_id, o.updated_at::text as updated_at
  from ${q}.consumer_offsets o
  join unnest($2::text[], $3::int[]) as p(topic, partition)
    on p.topic = o.topic and p.partition = o.partition
 where o.group_id = $1::text`;
}

/**
 * The first statement of every batch transaction: the partition's offset row, locked. Every
 * owner of a partition takes this lock first and the inbox rows after it, so lock order is
 * the same for all of them, and a consumer that lost the partition while its handler hung
 * holds the offset row, never an inbox row the new owner would queue behind unseen. The
 * wait is bounded by the `lock_timeout` set for this statement alone, and the holder's
 * transaction by the handler timeout (aborted at the database), so a new owner always gets
 * through. No row: an operator deleted it; the caller recreates it.
 */
export function lockOffsetSql(q: string): string {
  return lockOffsetText(q, '$1::text', '$2::text', '$3::int');
}

/**
 * The same statement with its values written in, for the batch's opening statements (sent
 * as one message, which takes no parameters): `group` and `topic` as escaped literals,
 * `partition` a checked integer.
 */
export function lockOffsetInlineSql(q: string, group: string, topic: string, partition: number): string {
  if (!Number.isInteger(partition)) throw new TypeError(`partition must be an integer, got ${partition}`);
  return lockOffsetText(q, pg.escapeLiteral(group), pg.escapeLiteral(topic), String(partition));
}

function lockOffsetText(q: string, group: string, topic: string, partition: string): string {
  return `
select next_offset, topic_id from ${q}.consumer_offsets
 where group_id = ${group} and topic = ${topic} and partition = ${partition}
   for update`;
}

/**
 * The stored next offset of one partition, creating the row with `$4` (and topic id `$5`)
 * when the group has none yet. Runs in a statement of its own, before a partition's first
 * batch or when "start at the end" is pinned: inside a batch transaction the uncommitted row
 * would make every other consumer of the partition wait for that batch. No row comes back
 * only when another consumer created the row concurrently after this statement's snapshot:
 * the caller retries.
 */
export function readOffsetSql(q: string): string {
  return `
with inserted as (
  insert into ${q}.consumer_offsets (group_id, topic, partition, next_offset, topic_id)
  values ($1::text, $2::text, $3::int, $4::bigint, $5::text)
  on conflict (group_id, topic, partition) do nothing
  returning next_offset
)
select next_offset from inserted
union all
select next_offset from ${q}.consumer_offsets
 where group_id = $1::text and topic = $2::text and partition = $3::int
limit 1`;
}

/**
 * Moves a partition's stored offset to the start of a new log incarnation (`$6`, topic id
 * `$7`) after the stored position was found to belong to another one (topic recreated,
 * log truncated, records deleted). A compare-and-set on the value and topic id the consumer
 * judged stale (`$4`, `$5`): if an operator or another consumer changed the row meanwhile,
 * nothing is updated and the caller re-reads it.
 */
export function resetOffsetSql(q: string): string {
  return `
update ${q}.consumer_offsets
   set next_offset = $6::bigint, topic_id = $7::text, updated_at = now()
 where group_id = $1::text and topic = $2::text and partition = $3::int
   and next_offset = $4::bigint and topic_id is not distinct from $5::text
returning next_offset`;
}

/**
 * Records the topic incarnation of offsets that have none (rows from before topic ids were
 * kept, or set by an operator), once they were checked against that incarnation's log.
 */
export function adoptTopicIdSql(q: string): string {
  return `
update ${q}.consumer_offsets o
   set topic_id = t.topic_id
  from unnest($2::text[], $3::int[], $4::text[]) as t(topic, partition, topic_id)
 where o.group_id = $1::text and o.topic = t.topic and o.partition = t.partition and o.topic_id is null`;
}

/**
 * Operator change of a group's offsets (`offsets set` / `offsets rewind`): upserts the next
 * offset of each listed partition and forgets the inbox entries at or after it, so the
 * records from there on are applied again rather than skipped as duplicates. One statement
 * per concern, both in the caller's transaction; returns the previous value per partition.
 * The stored topic id becomes `$5`, the topic's current id (NULL when the brokers report
 * none): the operator's offset is a position in the partition's current log. This is also
 * what releases a partition blocked by `onOffsetOutOfRange: 'block'`.
 */
export function setOffsetsSql(q: string): string {
  return `
with target as (
  select * from unnest($2::text[], $3::int[], $4::bigint[]) as t(topic, partition, next_offset)
), previous as (
  select o.topic, o.partition, o.next_offset
    from ${q}.consumer_offsets o join target t on t.topic = o.topic and t.partition = o.partition
   where o.group_id = $1::text
     for update of o
), upserted as (
  insert into ${q}.consumer_offsets (group_id, topic, partition, next_offset, topic_id)
  select $1::text, topic, partition, next_offset, $5::text from target
  on conflict (group_id, topic, partition) do update set next_offset = excluded.next_offset, topic_id = $5::text, updated_at = now()
  returning topic, partition, next_offset
)
select u.topic, u.partition, u.next_offset, p.next_offset as previous_offset
  from upserted u left join previous p on p.topic = u.topic and p.partition = u.partition
 order by u.topic, u.partition`;
}

/**
 * Forgets inbox entries of the group at or after the new offsets (see {@link setOffsetsSql})
 * in the topic's current log (`$5`): entries applied from an older incarnation of the topic
 * lie at the same offsets but are other records, and keep recognising events published
 * again. With `$5` NULL (no topic id known) every entry at or after the offsets goes.
 */
export function forgetInboxSql(q: string): string {
  return `
delete from ${q}.consumer_inbox i
 using unnest($2::text[], $3::int[], $4::bigint[]) as t(topic, partition, next_offset)
 where i.group_id = $1::text and i.topic = t.topic and i.partition = t.partition and i."offset" >= t.next_offset
   and ($5::text is null or i.topic_id is null or i.topic_id = $5::text)`;
}

/**
 * `offsets rewind`: moves stored offsets BACK to the targets, never forward, and never
 * creates rows (a partition the group never consumed has nothing to rewind). The
 * comparison is in the UPDATE itself, so it is re-checked against the latest committed row
 * under its lock: a consumer that committed further meanwhile is rewound from where it
 * really is, and one already before the target is left alone. The topic id becomes `$5`,
 * as in {@link setOffsetsSql}. Returns what moved.
 */
export function rewindOffsetsSql(q: string): string {
  return `
update ${q}.consumer_offsets o
   set next_offset = t.next_offset, topic_id = $5::text, updated_at = now()
  from unnest($2::text[], $3::int[], $4::bigint[]) as t(topic, partition, next_offset)
 where o.group_id = $1::text and o.topic = t.topic and o.partition = t.partition
   and t.next_offset < o.next_offset
returning o.topic, o.partition, o.next_offset`;
}

/** A group's stored offsets, optionally of one topic (`$2`; null: every topic), by topic and partition. */
export function groupOffsetsSql(q: string): string {
  return `
select topic, partition, next_offset::text as next_offset, updated_at
  from ${q}.consumer_offsets
 where group_id = $1::text and ($2::text is null or topic = $2::text)
 order by topic, partition`;
}

/** Whether the group has stored any offset at all. */
export function groupKnownSql(q: string): string {
  return `select 1 from ${q}.consumer_offsets where group_id = $1::text limit 1`;
}

/** The stored next offsets of some partitions of one topic, before an operator moves them. */
export function partitionOffsetsSql(q: string): string {
  return `
select partition, next_offset from ${q}.consumer_offsets
 where group_id = $1::text and topic = $2::text and partition = any($3::int[])`;
}
