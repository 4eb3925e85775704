// The consumer's batch transactions: how one opens (its time limits, the offset row lock),
// when it began, and ending exactly that transaction from outside when its handler overran
// or its partition was lost.

import { lockOffsetInlineSql } from './consumer-offsets.js';

/**
 * Appended to a transaction's opening statements: the transaction's start as
 * pg_stat_activity shows it (`xact_start`), in UTC text that no session's DateStyle or
 * TimeZone can change, so that an abort targets exactly this transaction.
 */
export const TRANSACTION_START = `select to_char(now() at time zone 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') as xact_start`;

/**
 * Ends backend `$1`, but only while it still runs the transaction that began at `$2` (see
 * TRANSACTION_START; null: whatever it runs): a terminate that waited for a pool connection
 * must not hit a later transaction of the backend, or another backend that got the pid.
 * Answers what the backend was doing just before (`active`: running a statement; `idle in
 * transaction`: waiting for one), or no row when the transaction was gone already.
 */
export const TERMINATE_TRANSACTION_SQL = `select state, pg_terminate_backend(pid) as terminated from pg_stat_activity
 where pid = $1::int and ($2::text is null or xact_start = $2::timestamp at time zone 'UTC')`;

/**
 * The opening statements of a batch transaction, sent in one round trip: BEGIN, limits of a
 * second more than `handlerTimeoutMs` (so that a live consumer's own timer decides, and
 * charges the record, before the server does; a frozen consumer's transaction is ended by
 * PostgreSQL), the offset row lock under `lockTimeoutMs` (that statement only), then
 * {@link TRANSACTION_START}. Values are validated integers and escaped literals, so they are
 * part of the text. The lock's result is {@link BATCH_BEGIN_LOCK_RESULT} from the end.
 */
export function batchBeginSql(q: string, lock: { groupId: string; topic: string; partition: number }, handlerTimeoutMs: number, lockTimeoutMs: number): string {
  const h = Math.trunc(handlerTimeoutMs) + 1_000;
  return [
    'begin',
    `set local statement_timeout = ${h}`,
    `set local idle_in_transaction_session_timeout = ${h}`,
    lockTimeoutSql(lockTimeoutMs),
    lockOffsetInlineSql(q, lock.groupId, lock.topic, lock.partition),
    DEFAULT_LOCK_TIMEOUT_SQL,
    TRANSACTION_START,
  ].join(';\n');
}

/** Where the offset row lock's result is among {@link batchBeginSql}'s results. */
export const BATCH_BEGIN_LOCK_RESULT = -3;

/** The statements of this transaction that follow wait at most `ms` for a lock. */
export const lockTimeoutSql = (ms: number) => `set local lock_timeout = ${Math.trunc(ms)}`;
export const DEFAULT_LOCK_TIMEOUT_SQL = 'set local lock_timeout to default';

/** BEGIN of a dead-letter replay: statement and idle limits of `ms`, as a batch has. */
export function replayBeginSql(ms: number): string {
  return `begin; set local statement_timeout = ${Math.trunc(ms)}; set local idle_in_transaction_session_timeout = ${Math.trunc(ms)}`;
}
