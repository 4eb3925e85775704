// Statements of the operator repairs (outbox-relay retry / skip). Filters are bound
// parameters, never part of the text.

/** The rows named by id, locked for the repair, with what decides whether it may be applied. */
export const lockRowsByIdSql = (q: string) => `
select id::text, topic, key, state, attempts
  from ${q}.messages
 where id = any($1::bigint[])
 order by id
   for update`;

/** Dead rows matching the filter (each condition applies only when given), locked, oldest first. */
export const lockDeadRowsSql = (q: string) => `
select id::text, topic, key, state, attempts
  from ${q}.messages
 where state = 'dead'
   and ($1::text is null or topic = $1::text)
   and ($2::text is null or key = $2::text)
   and ($3::timestamptz is null or created_at >= $3::timestamptz)
 order by id
 limit $4::int
   for update`;

/**
 * Back to pending, due now, attempts reset. Order is the claim's business: the row goes
 * after any earlier unsent row of its key, and before the later ones held behind it.
 */
export const retryRowsSql = (q: string) => `
update ${q}.messages
   set state = 'pending', attempts = 0, next_attempt_at = now(), held = false
 where id = any($1::bigint[])`;

/** Parked for good: never published, no longer holding back its key. */
export const skipRowsSql = (q: string) => `
update ${q}.messages
   set state = 'skipped', held = false, last_error = coalesce(last_error || ' / ', '') || 'skipped: ' || $2::text
 where id = any($1::bigint[])`;

export const auditSql = (q: string) => `
insert into ${q}.operator_actions (actor, command, row_ids, filter, reason, counts)
values ($1::text, $2::text, $3::bigint[], $4::jsonb, $5::text, $6::jsonb)
returning id::text`;

/** A group's dead letters, newest first: pending ones only unless `$3`. */
export const listDeadLettersSql = (q: string) => `
select id::text, topic, partition, "offset"::text, attempts, error, failed_at, replayed_at, replay_requested_at, discarded_at, discard_reason
  from ${q}.dead_letters
 where group_id = $1::text
   and ($2::text is null or topic = $2::text)
   and ($3::boolean or (replayed_at is null and discarded_at is null))
 order by id desc
 limit $4::int`;

/** One dead letter in full, the value cut to `$3` bytes. */
export const showDeadLetterSql = (q: string) => `
select id::text, group_id, topic, partition, "offset"::text, key, headers, attempts, error, failed_at, replayed_at, replay_requested_at,
       discarded_at, discard_reason, octet_length(value) as value_bytes, substring(value from 1 for $3::int) as value_head
  from ${q}.dead_letters
 where id = $1::bigint and group_id = $2::text`;

/** The group's dead letters named by id, locked for a request, with their state. */
export const lockDeadLettersSql = (q: string) => `
select id::text, topic, replayed_at is not null as replayed, discarded_at is not null as discarded
  from ${q}.dead_letters
 where group_id = $1::text and id = any($2::bigint[])
 order by id
   for update`;

export const requestReplaySql = (q: string) => `
update ${q}.dead_letters set replay_requested_at = now() where group_id = $1::text and id = any($2::bigint[])`;

export const discardDeadLettersSql = (q: string) => `
update ${q}.dead_letters set discarded_at = now(), discard_reason = $3::text, replay_requested_at = null
 where group_id = $1::text and id = any($2::bigint[])`;

/** Whether a consumer group is known here: offsets or dead letters. */
/** Whether consumer group `$1` has stored offsets or dead letters of topic `$2`. */
export const knownGroupTopicSql = (q: string) => `
select exists (select 1 from ${q}.consumer_offsets where group_id = $1::text and topic = $2::text)
    or exists (select 1 from ${q}.dead_letters where group_id = $1::text and topic = $2::text) as known`;

export const knownGroupSql = (q: string) => `
select exists (select 1 from ${q}.consumer_offsets where group_id = $1::text)
    or exists (select 1 from ${q}.dead_letters where group_id = $1::text) as known`;
