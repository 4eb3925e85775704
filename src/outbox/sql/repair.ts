// Statements of the operator repairs (outbox-relay retry / skip). Filters are bound
// parameters, never part of the text.

/** The rows named by id, locked for the repair, with what decides whether it may be applied. */
export const lockRowsByIdSql = (schema: string) => `
select id::text, topic, key, state, attempts
  from ${schema}.messages
 where id = any($1::bigint[])
 order by id
   for update`;

/** Dead rows matching the filter (each condition applies only when given), locked, oldest first. */
export const lockDeadRowsSql = (schema: string) => `
select id::text, topic, key, state, attempts
  from ${schema}.messages
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
export const retryRowsSql = (schema: string) => `
update ${schema}.messages
   set state = 'pending', attempts = 0, next_attempt_at = now(), held = false
 where id = any($1::bigint[])`;

/** Parked for good: never published, no longer holding back its key. */
export const skipRowsSql = (schema: string) => `
update ${schema}.messages
   set state = 'skipped', held = false, last_error = coalesce(last_error || ' / ', '') || 'skipped: ' || $2::text
 where id = any($1::bigint[])`;

export const auditSql = (schema: string) => `
insert into ${schema}.operator_actions (actor, command, row_ids, filter, reason, counts)
values ($1::text, $2::text, $3::bigint[], $4::jsonb, $5::text, $6::jsonb)
returning id::text`;
