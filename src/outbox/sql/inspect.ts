// Read-only statements of the on-call commands (outbox-relay stuck / show). Filters are
// bound parameters, never part of the text.

/**
 * Unsent rows older than `$1` ms, oldest first, with what holds each back: its own state,
 * or the first earlier failed or dead row of its key (through the index of such rows).
 */
export const stuckRowsSql = (schema: string) => `
select m.id::text, m.topic, m.key, m.state, m.held, m.attempts, m.last_error, m.created_at, m.next_attempt_at,
       extract(epoch from now() - m.created_at)::float8 as age_seconds,
       (select min(e.id)::text from ${schema}.messages e
         where m.key is not null and e.key = m.key and e.id < m.id and e.state in ('failed', 'dead')) as blocked_by
  from ${schema}.messages m
 where m.state in ('pending', 'failed', 'dead')
   and m.created_at < now() - $1::bigint * interval '1 millisecond'
   and ($2::text is null or m.state = $2::text)
   and ($3::text is null or m.topic = $3::text)
   and ($4::text is null or m.key = $4::text)
 order by m.id
 limit $5::int`;

/** One row in full, the payload cut to `$2` bytes. */
export const showRowSql = (schema: string) => `
select m.id::text, m.topic, m.key, m.state, m.held, m.attempts, m.last_error, m.created_at, m.next_attempt_at, m.sent_at,
       m.kafka_partition, m.kafka_offset::text, m.headers, m.event_type, m.aggregate_type, m.aggregate_id,
       m.schema_version, m.traceparent, octet_length(m.payload) as payload_bytes, substring(m.payload from 1 for $2::int) as payload_head
  from ${schema}.messages m
 where m.id = $1::bigint`;
