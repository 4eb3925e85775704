/**
 * The next rows of one shard, in id order, that may be published now.
 *
 * - Only unsent rows whose next attempt is due (the partial index on unsent ids keeps the
 *   scan short however many sent rows are retained).
 * - Shard of a row: a stable hash of its key modulo the shard count, so a key always has
 *   one owner; rows without a key spread by id.
 * - Per-key order: a row is held back while an EARLIER row of its key is dead or waiting
 *   for a later retry. Earlier rows that are due come first in the same result (id
 *   order), so a batch never overtakes them.
 * No row locks are taken: a shard has one lease holder, and Kafka's transactional fencing
 * stops a former holder that has not noticed yet.
 */
export function claimBatchSql(schema: string): string {
  return `
select m.id, m.topic, m.key, m.payload, m.headers, m.event_type, m.aggregate_type, m.aggregate_id,
       m.schema_version, m.traceparent, m.created_at, m.attempts
  from ${schema}.messages m
 where m.state <> 'sent'
   and m.state <> 'dead'
   and m.next_attempt_at <= now()
   and (case when m.key is null then m.id % $1::int
             else (hashtext(m.key) & 2147483647) % $1::int end) = $2::int
   and (m.key is null or not exists (
         select 1 from ${schema}.messages e
          where e.key = m.key and e.id < m.id and e.state <> 'sent'
            and (e.state = 'dead' or e.next_attempt_at > now())))
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
