import type pg from 'pg';
import { isInfrastructureError } from '../db/errors.js';
import { TERMINATE_TRANSACTION_SQL } from '../sql/consumer-batches.js';

// Aborting a batch transaction at the database, and judging from what its backend was doing
// whether a handler's overrun was its own or its connection's (see BatchConnection.abort).

/**
 * A statement still unanswered after this long while its backend runs nothing: the
 * connection is silent (half-open), whatever the handler does. Far above any round trip,
 * so a handler busy with many quick statements is never mistaken for it.
 */
export const SILENT_LINK_MS = 1_000;

/** How long an abort waits for a pool connection and the terminate's answer together. */
const ABORT_ANSWER_MS = 5_000;

/**
 * Why a statement that waited `waitedMs` for its answer did so through no fault of the
 * handler, given what the abort found its backend doing; undefined when the server was
 * working on it (`active`: a slow statement or a lock wait is the handler's), or unknown.
 */
export function silentLinkReason(state: string, waitedMs: number): string | undefined {
  const waited = `a statement waited ${Math.round(waitedMs)} ms for an answer`;
  if (state === 'gone') return `${waited}, and the server had ended the transaction`;
  if (state === 'unreachable') return `${waited}, and the database did not answer the abort either`;
  if (state.startsWith('idle')) return `${waited} the server was not working on (backend ${state})`;
  return undefined;
}

/**
 * Ends backend `pid` while it still runs the batch transaction that began at
 * `transactionStart` (TERMINATE_TRANSACTION_SQL), from a connection of `pool`, and answers
 * what it was doing: its `state`, `gone` (the transaction had ended), `unreachable` (the
 * pool's connection did not answer, or failed as a broken connection does) or `unknown`
 * (no pool connection within the time, or another error: nothing can be said).
 */
export async function terminateTransaction(pool: pg.Pool, pid: number, transactionStart: string | undefined): Promise<string> {
  const deadline = Date.now() + ABORT_ANSWER_MS;
  const late = <T>(p: Promise<T>, value: T) => Promise.race([p, new Promise<T>((resolve) => setTimeout(() => resolve(value), Math.max(0, deadline - Date.now())).unref())]);
  const connecting = pool.connect();
  const got = await late(
    connecting.then(
      (client) => ({ client }),
      (err: unknown) => ({ state: isInfrastructureError(err) ? 'unreachable' : 'unknown' }),
    ),
    { state: 'unknown' },
  );
  if (!('client' in got)) {
    // A pool busy to the end is not the database's silence; a connection that came late goes back.
    connecting.then((client) => client.release(), () => undefined);
    return got.state;
  }
  // Only this transaction: a terminate that waited for a pool connection must not hit a
  // later transaction of the backend, or another backend that got the pid.
  const asked = got.client.query<{ state: string | null }>(TERMINATE_TRANSACTION_SQL, [pid, transactionStart ?? null]).then(
    (result) => ({ state: result.rows.length === 0 ? 'gone' : (result.rows[0]!.state ?? 'unknown') }),
    (err: unknown) => ({ state: isInfrastructureError(err) ? 'unreachable' : 'unknown', err }),
  );
  const answer = await late(asked, { state: 'unreachable', err: new Error('no answer to the abort') });
  // A connection that did not answer is dropped, not handed out again.
  got.client.release('err' in answer ? (answer.err as Error) : undefined);
  return answer.state;
}
