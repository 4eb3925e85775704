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
