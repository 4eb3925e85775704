/**
 * Ids of a group's unreplayed dead letters, oldest first, optionally only `$2` ids and/or
 * topic `$3` (nulls mean "any"). Served by the partial index on pending rows.
 */
export function pendingDeadLetterIdsSql(q: string): string {
  return `
select id from ${q}.dead_letters
 where group_id = $1::text and replayed_at is null and discarded_at is null
   and ($2::bigint[] is null or id = any($2::bigint[]))
   and ($3::text is null or topic = $3::text)
 order by id
 limit $4::int`;
}

/** One pending dead letter of a group, read (not locked) to learn its record before claiming its inbox entry. */
export function pendingDeadLetterSql(q: string): string {
  return `
select id, topic, partition, "offset", key, value, headers, attempts, topic_id
  from ${q}.dead_letters
 where id = $1::bigint and group_id = $2::text and replayed_at is null and discarded_at is null`;
}

/**
 * Locks a pending dead letter for its replay transaction, after its inbox entry was claimed:
 * inbox first, dead letter second is also the consumer's order (a batch settles dead letters
 * after its claims), so a replay and a batch applying the same record cannot deadlock.
 * `skip locked`: a dead letter another replayer (or a batch) holds is left to it.
 */
export function lockDeadLetterSql(q: string): string {
  return `
select id from ${q}.dead_letters
 where id = $1::bigint and replayed_at is null and discarded_at is null
 for update skip locked`;
}

/** Marks a dead letter replayed, in the transaction that applied it. */
export function markReplayedSql(q: string): string {
  return `update ${q}.dead_letters set replayed_at = now(), replay_requested_at = null where id = $1::bigint`;
}

/** Records a failed replay attempt (its own transaction: the replay's was rolled back). */
export function recordReplayFailureSql(q: string): string {
  return `
update ${q}.dead_letters
   set error = $2::text, attempts = attempts + 1, failed_at = now(), replay_requested_at = null
 where id = $1::bigint and replayed_at is null`;
}

/** Ids of the group's dead letters whose replay an operator requested (outbox-relay dead-letters replay). */
export function requestedReplaysSql(q: string): string {
  return `
select id::text from ${q}.dead_letters
 where group_id = $1::text and replay_requested_at is not null and replayed_at is null and discarded_at is null
 order by id
 limit $2::int`;
}

/** A requested replay that found nothing to do (settled meanwhile): the request is cleared. */
export function clearReplayRequestSql(q: string): string {
  return `update ${q}.dead_letters set replay_requested_at = null where id = $1::bigint`;
}
