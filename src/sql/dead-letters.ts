import pg from 'pg';

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

export interface SettleAndAdvance {
  groupId: string;
  topic: string;
  partition: number;
  /** The next offset read under the lock at the start of the transaction. */
  expected: number;
  next: number;
  /** Offsets of the records the batch applied. */
  applied: readonly number[];
  topicId: string | null;
}

/**
 * The end of a batch, in one statement: settle the dead letters of the records it applied,
 * then compare-and-set the partition's next offset.
 *
 * - Settle: a record applied normally (typically after a rewind, once its handler was
 *   fixed) settles its pending dead letter in the same transaction, so a later replay
 *   cannot apply it a second time. Only a dead letter of the same topic incarnation:
 *   a recreated topic's record at that offset is another record. The unique index on the
 *   position finds it; a batch may have applied no record.
 * - Advance: as advanceOffsetSql, from `expected` to `next`; no row returned means another
 *   consumer (or an operator) moved the offset, and the caller rolls everything back (the
 *   settled dead letters with it).
 */
export function settleAndAdvanceSql(q: string, v: SettleAndAdvance): string {
  // Sent with the deferred-constraint check as one message, which takes no parameters: the
  // values are written in, strings as escaped literals, numbers checked to be integers.
  const int = (n: number): string => {
    if (!Number.isSafeInteger(n)) throw new TypeError(`expected an integer, got ${n}`);
    return String(n);
  };
  const group = pg.escapeLiteral(v.groupId);
  const topic = pg.escapeLiteral(v.topic);
  const topicId = v.topicId === null ? 'null::text' : pg.escapeLiteral(v.topicId);
  return `
with settled as (
  update ${q}.dead_letters
     set replayed_at = now(), replay_requested_at = null
   where group_id = ${group} and topic = ${topic} and partition = ${int(v.partition)}
     and "offset" = any('{${v.applied.map(int).join(',')}}'::bigint[]) and replayed_at is null
     and (topic_id is null or ${topicId} is null or topic_id = ${topicId})
)
update ${q}.consumer_offsets
   set next_offset = ${int(v.next)}, updated_at = now()
 where group_id = ${group} and topic = ${topic} and partition = ${int(v.partition)}
   and next_offset = ${int(v.expected)}
returning next_offset`;
}
