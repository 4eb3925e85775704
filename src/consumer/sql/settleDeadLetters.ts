/**
 * The end of a batch, in one statement: settle the dead letters of the records it applied,
 * then compare-and-set the partition's next offset.
 *
 * - Settle: a record applied normally (typically after a rewind, once its handler was
 *   fixed) settles its pending dead letter in the same transaction, so a later replay
 *   cannot apply it a second time. Only a dead letter of the same topic incarnation (`$7`):
 *   a recreated topic's record at that offset is another record. The unique index on the
 *   position finds it; `$6` (the applied offsets) may be empty.
 * - Advance: as advanceOffsetSql, from `$4` to `$5`; no row returned means another
 *   consumer (or an operator) moved the offset, and the caller rolls everything back (the
 *   settled dead letters with it).
 */
export function settleAndAdvanceSql(q: string): string {
  return `
with settled as (
  update ${q}.dead_letters
     set replayed_at = now(), replay_requested_at = null
   where group_id = $1::text and topic = $2::text and partition = $3::int
     and "offset" = any($6::bigint[]) and replayed_at is null
     and (topic_id is null or $7::text is null or topic_id = $7::text)
)
update ${q}.consumer_offsets
   set next_offset = $5::bigint, updated_at = now()
 where group_id = $1::text and topic = $2::text and partition = $3::int
   and next_offset = $4::bigint
returning next_offset`;
}
