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
