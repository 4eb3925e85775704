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
