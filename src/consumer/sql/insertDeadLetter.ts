/**
 * Parks a record that failed every attempt. Runs in the transaction that moves the offset
 * past it, so the record is either dead-lettered and skipped, or neither. A record seen
 * again after a rewind and failing again updates its existing row (and makes it pending).
 */
export function insertDeadLetterSql(q: string): string {
  return `
insert into ${q}.dead_letters (group_id, topic, partition, "offset", key, value, headers, error, attempts)
values ($1::text, $2::text, $3::int, $4::bigint, $5::bytea, $6::bytea, $7::jsonb, $8::text, $9::int)
on conflict (group_id, topic, partition, "offset") do update
   set key = excluded.key, value = excluded.value, headers = excluded.headers, error = excluded.error,
       attempts = excluded.attempts, failed_at = now(), replayed_at = null
returning id`;
}
