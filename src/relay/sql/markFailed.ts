/**
 * Records a failed attempt on one row: the error text, one more attempt, and either the
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
       state = case when $6::boolean or attempts + 1 >= $3::int then 'dead' else 'failed' end,
       next_attempt_at = now() + least($5::bigint, $4::bigint * power(2, least(attempts, 30))::bigint) * interval '1 millisecond'
 where id = $1::bigint and state not in ('sent', 'skipped')
returning state, attempts`;
}
