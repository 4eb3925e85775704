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
  return `
select next_offset, topic_id from ${q}.consumer_offsets
 where group_id = $1::text and topic = $2::text and partition = $3::int
   for update`;
}
