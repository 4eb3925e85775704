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
