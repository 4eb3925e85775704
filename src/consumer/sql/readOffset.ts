/**
 * The stored next offset of one partition, creating the row with `$4` when the group has
 * none yet. Insert and read are one statement (one round trip at the start of every batch
 * transaction). The read is deliberately NOT `for update`: the lock is taken by the
 * compare-and-set in {@link advanceOffsetSql} at the end of the batch, so a handler stuck in
 * a consumer that lost the partition never blocks the new owner; its late commit is fenced
 * instead. No row comes back only when another consumer created the row concurrently after
 * this statement's snapshot: the caller retries.
 */
export function readOffsetSql(q: string): string {
  return `
with inserted as (
  insert into ${q}.consumer_offsets (group_id, topic, partition, next_offset)
  values ($1::text, $2::text, $3::int, $4::bigint)
  on conflict (group_id, topic, partition) do nothing
  returning next_offset
)
select next_offset from inserted
union all
select next_offset from ${q}.consumer_offsets
 where group_id = $1::text and topic = $2::text and partition = $3::int
limit 1`;
}
