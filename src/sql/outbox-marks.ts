/**
 * Marks the rows a committed Kafka transaction carried as sent, and advances the shard's
 * checkpoint cursor, in one statement (so one transaction). Rows already sent are left
 * alone, which makes replaying a checkpoint harmless. Within one partition of one
 * incarnation of the checkpoint topic (`$7`, `$8`: its topic id) `greatest` keeps the
 * cursor from moving backwards if a slow former owner marks late; an offset of another
 * partition or incarnation replaces it.
 */
export function markSentSql(q: string): string {
  return `
with sent as (
  select * from unnest($1::bigint[], $2::int[], $3::bigint[]) as s(id, kafka_partition, kafka_offset)
), updated as (
  update ${q}.messages m
     set state = 'sent', sent_at = now(), attempts = m.attempts + 1, last_error = null, held = false,
         kafka_partition = s.kafka_partition, kafka_offset = s.kafka_offset
    from sent s
   where m.id = s.id and m.state <> 'sent'
  returning m.id
)
update ${q}.relay_shards
   set checkpoint_offset = case when checkpoint_topic_id is not distinct from $8::text
                                 and checkpoint_partition is not distinct from $7::int
                                then greatest(checkpoint_offset, $6::bigint) else $6::bigint end,
       checkpoint_topic_id = $8::text,
       checkpoint_partition = $7::int,
       updated_at = now()
 where relay_group = $4::text and shard = $5::int
returning (select count(*)::int from updated) as marked`;
}

/** Failed attempts kept per row in `errors` (migrations/0015_error_history.sql), the latest ones. */
export const ERROR_HISTORY = 10;

/**
 * Records a failed attempt on one row: the error text (also appended to its `errors`), one more attempt, and either the
 * next attempt time (capped exponential backoff) or `dead` once attempts reach the limit.
 * `$6` marks it dead at once: the row can never be published as it is (it is larger than
 * any record the producer or topic accepts), so retrying would only hold its key back
 * longer. Later rows of the same key wait either way (see claimBatch). A row an operator
 * skipped while it was in flight stays skipped.
 */
export function markFailedSql(q: string): string {
  return `
update ${q}.messages
   set attempts = attempts + 1,
       last_error = $2::text,
       errors = (case when jsonb_array_length(coalesce(errors, '[]'::jsonb)) >= ${ERROR_HISTORY} then errors - 0 else coalesce(errors, '[]'::jsonb) end)
                || jsonb_build_array(jsonb_build_object('at', now(), 'attempt', attempts + 1, 'error', $2::text)),
       state = case when $6::boolean or attempts + 1 >= $3::int then 'dead' else 'failed' end,
       next_attempt_at = now() + least($5::bigint, $4::bigint * power(2, least(attempts, 30))::bigint) * interval '1 millisecond'
 where id = $1::bigint and state not in ('sent', 'skipped')
returning state, attempts`;
}
