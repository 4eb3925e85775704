/**
 * A record applied normally (typically after a rewind, once its handler was fixed) settles
 * its pending dead letter in the same transaction, so a later replay cannot apply it a
 * second time. Only a dead letter of the same topic incarnation (`$5`): a recreated topic's
 * record at that offset is another record. The unique index on the position finds it.
 */
export function settleDeadLettersSql(schema: string): string {
  return `
update ${schema}.dead_letters
   set replayed_at = now(), replay_requested_at = null
 where group_id = $1::text and topic = $2::text and partition = $3::int
   and "offset" = any($4::bigint[]) and replayed_at is null
   and (topic_id is null or $5::text is null or topic_id = $5::text)`;
}
