/**
 * A record applied normally (typically after a rewind, once its handler was fixed) settles
 * its pending dead letter in the same transaction, so a later replay cannot apply it a
 * second time. The unique (group, topic, partition, offset) constraint's index finds it.
 */
export function settleDeadLettersSql(schema: string): string {
  return `
update ${schema}.dead_letters
   set replayed_at = now()
 where group_id = $1::text and topic = $2::text and partition = $3::int
   and "offset" = any($4::bigint[]) and replayed_at is null`;
}
