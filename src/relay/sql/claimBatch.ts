/**
 * The next rows of one shard, in id order, that may be published now.
 *
 * - Only pending or failed rows whose attempt is due (the partial index on publishable ids
 *   keeps the scan short however many sent or dead rows are retained).
 * - Shard of a row: a stable hash of its key modulo the shard count, so a key always has
 *   one owner; rows without a key spread by id.
 * - Per-key order: a row is held back while an EARLIER row of its key is failed (waiting
 *   for, or due for, its retry) or dead. A due failed row is itself in the result; the
 *   rows after it wait for the next batch, so a retry can never be overtaken.
 * No row locks are taken: a shard has one lease holder, and Kafka's transactional fencing
 * stops a former holder that has not noticed yet.
 */
export function claimBatchSql(schema: string): string {
  return `
select m.id, m.topic, m.key, m.payload, m.headers, m.event_type, m.aggregate_type, m.aggregate_id,
       m.schema_version, m.traceparent, m.created_at, m.attempts
  from ${schema}.messages m
 where m.state in ('pending', 'failed')
   and m.next_attempt_at <= now()
   and (case when m.key is null then m.id % $1::int
             else (hashtext(m.key) & 2147483647) % $1::int end) = $2::int
   and (m.key is null or not exists (
         select 1 from ${schema}.messages e
          where e.key = m.key and e.id < m.id and e.state in ('failed', 'dead')))
 order by m.id
 limit $3::int`;
}

export interface ClaimedRow {
  id: string;
  topic: string;
  key: string | null;
  payload: Buffer | null;
  headers: Record<string, string>;
  event_type: string | null;
  aggregate_type: string | null;
  aggregate_id: string | null;
  schema_version: number | null;
  traceparent: string | null;
  created_at: Date;
  attempts: number;
}
