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
