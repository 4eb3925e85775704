/**
 * Parks a record that failed every attempt (one row per record: group, position and topic
 * incarnation, see the unique index in migration 0004). Runs in the transaction that moves the offset
 * past it, so the record is either dead-lettered and skipped, or neither. A record seen
 * again after a rewind and failing again updates its existing row (and makes it pending).
 * `$10` is the topic id of the log the record came from; a replay's inbox entry keeps it.
 */
export function insertDeadLetterSql(q: string): string {
  return `
insert into ${q}.dead_letters (group_id, topic, partition, "offset", key, value, headers, error, attempts, topic_id)
values ($1::text, $2::text, $3::int, $4::bigint, $5::bytea, $6::bytea, $7::jsonb, $8::text, $9::int, $10::text)
on conflict (group_id, topic, partition, "offset", coalesce(topic_id, '')) do update
   set key = excluded.key, value = excluded.value, headers = excluded.headers, error = excluded.error,
       attempts = excluded.attempts, topic_id = excluded.topic_id, failed_at = now(), replayed_at = null, discarded_at = null, discard_reason = null, replay_requested_at = null
returning id`;
}
