/** Subscribes the session to the outbox's notifications (`channel`: see notifyChannel). */
export const listenSql = (channel: string) => `listen "${channel}"`;

/**
 * Whether writers should wake this member (see migration 0012): `$3` true while one of its
 * shard workers waits for rows, false while all of them are busy. Run on its own
 * (autocommit), so that it is visible before {@link currentSnapshotSql} is read.
 */
export const setMemberIdleSql = (q: string) => `
update ${q}.relay_members set idle = $3::boolean
 where relay_group = $1::text and relay_id = $2::text`;

/**
 * A snapshot taken after the member's `idle = true` committed. A writer that read the flag
 * before that (and so did not notify) had its transaction id assigned by its INSERT, before
 * its trigger read the flag: it is either committed already, and visible to the next
 * claim, or listed as running in this snapshot.
 */
export const currentSnapshotSql = () => `select pg_current_snapshot()::text as snapshot`;

/** How many transactions running at snapshot `$1` still are: once none, every row they wrote is visible or gone. */
export const stillRunningSql = () => `
select count(*)::int as running
  from pg_snapshot_xip($1::pg_snapshot) as x
 where pg_xact_status(x) = 'in progress'`;
