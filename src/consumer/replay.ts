import type pg from 'pg';
import { DEFAULT_SCHEMA, quoteSchema } from '../db/identifiers.js';
import { describeError, OutboxError } from '../errors.js';
import type { Logger } from '../log.js';
import { NOOP_TRACING, type Tracing } from '../tracing.js';
import type { RecordHandler } from './handler.js';
import { decodeHeaders, type ConsumedRecord } from './record.js';
import { claimInboxSql } from '../sql/consumer-inbox.js';
import {
  clearReplayRequestSql,
  lockDeadLetterSql,
  markReplayedSql,
  pendingDeadLetterIdsSql,
  pendingDeadLetterSql,
  recordReplayFailureSql,
  requestedReplaysSql,
} from '../sql/dead-letters.js';
import { sleep } from '../async.js';
import { raceHandler } from './handler-run.js';
import { inTransaction } from './transaction.js';
import { replayBeginSql } from '../sql/consumer-batches.js';
import { CONSUMER_DEFAULTS } from './options.js';

export interface ReplayTarget {
  pool: pg.Pool;
  groupId: string;
  handler: RecordHandler;
  /** Default `outbox`. */
  schema?: string;
  /** Skip (and mark replayed) a dead letter whose outbox id the group applied meanwhile. Default `true`. */
  inbox?: boolean;
  /** Longest a replayed handler may run; past it its transaction is aborted at the database. Default 30,000 ms. */
  handlerTimeoutMs?: number;
  logger?: Logger;
  /** A span per handler call (see Tracing). Default none. */
  tracing?: Tracing;
}

export interface ReplayFilter {
  /** Only these dead-letter ids. Default: all pending ones of the group. */
  ids?: readonly (number | string | bigint)[];
  /** Only dead letters of this topic. */
  topic?: string;
  /** At most this many. Default 1,000. */
  limit?: number;
}

/** `replayed`: the handler succeeded; `duplicate`: already applied (inbox); `failed`: see `error`; `missing`: not pending. */
export type ReplayResult = { id: string; status: 'replayed' | 'duplicate' | 'missing' } | { id: string; status: 'failed'; error: string };

interface DeadLetterRow {
  id: string;
  topic: string;
  partition: number;
  offset: string;
  key: Buffer | null;
  value: Buffer | null;
  headers: Record<string, string>;
  topic_id: string | null;
}

/** The dead letter was settled or is being replayed elsewhere: rolled back, nothing to record. */
class Retracted extends Error {}

/**
 * Runs one dead letter through the handler in a transaction of its own, and marks it
 * replayed in that same transaction. On failure the transaction is rolled back and the
 * error and attempt count are updated on the dead letter.
 */
export async function replayDeadLetter(target: ReplayTarget, id: number | string | bigint): Promise<ReplayResult> {
  const q = quoteSchema(target.schema ?? DEFAULT_SCHEMA);
  const key = String(id);
  try {
    const timeoutMs = target.handlerTimeoutMs ?? CONSUMER_DEFAULTS.handlerTimeoutMs;
    return await inTransaction(
      target.pool,
      async (connection): Promise<ReplayResult> => {
        const { rows } = await connection.query(pendingDeadLetterSql(q), [key, target.groupId]);
        const row = rows[0] as DeadLetterRow | undefined;
        if (!row) return { id: key, status: 'missing' };
        const record: ConsumedRecord = {
          topic: row.topic,
          partition: row.partition,
          offset: Number(row.offset),
          key: row.key,
          value: row.value,
          headers: decodeHeaders(row.headers),
          timestamp: undefined,
        };
        const source = (target.inbox ?? true) ? record.headers.source : undefined;
        const outboxId = source === undefined ? undefined : record.headers.outboxId;
        let status: 'replayed' | 'duplicate' = 'replayed';
        if (source !== undefined && outboxId !== undefined) {
          const claim = await connection.query(claimInboxSql(q), [target.groupId, record.topic, record.partition, row.topic_id, [source], [outboxId], [record.offset]]);
          if (claim.rows.length === 0) status = 'duplicate';
        }
        const locked = await connection.query(lockDeadLetterSql(q), [key]);
        if (locked.rows.length === 0) throw new Retracted();
        if (status === 'replayed') {
          const span = (target.tracing ?? NOOP_TRACING).startProcess(record, target.groupId);
          try {
            const run = await raceHandler(connection, () => span.run(() => target.handler(record, connection.tx)), timeoutMs);
            if (run.kind === 'expired') {
              await connection.abort('handler-timeout');
              throw new OutboxError('HANDLER_TIMEOUT', `handler did not finish within ${timeoutMs} ms; its transaction was aborted`);
            }
            if (run.kind === 'failed') throw run.error;
            if (connection.misuse) throw connection.misuse;
            if (connection.transactionEnded || connection.transactionFailed) {
              throw new OutboxError('TX_CONTROL_REFUSED', 'the handler ended or aborted the replay transaction');
            }
            span.end();
          } catch (err) {
            span.end(err);
            throw err;
          }
        }
        await connection.query(markReplayedSql(q), [key]);
        return { id: key, status };
      },
      { begin: replayBeginSql(timeoutMs) },
    );
  } catch (err) {
    if (err instanceof Retracted) return { id: key, status: 'missing' };
    const error = describeError(err);
    await target.pool.query(recordReplayFailureSql(q), [key, error]);
    target.logger?.warn({ groupId: target.groupId, deadLetterId: key, err }, 'dead letter replay failed');
    return { id: key, status: 'failed', error };
  }
}

/** Replays pending dead letters of a group one by one, oldest first (each in its own transaction). */
export async function replayDeadLetters(target: ReplayTarget, filter: ReplayFilter = {}): Promise<ReplayResult[]> {
  const q = quoteSchema(target.schema ?? DEFAULT_SCHEMA);
  const { rows } = await target.pool.query<{ id: string }>(pendingDeadLetterIdsSql(q), [
    target.groupId,
    filter.ids ? filter.ids.map(String) : null,
    filter.topic ?? null,
    filter.limit ?? 1_000,
  ]);
  const results: ReplayResult[] = [];
  for (const { id } of rows) results.push(await replayDeadLetter(target, id));
  return results;
}

/** How often a running consumer looks for replays an operator requested. */
export const REPLAY_REQUEST_INTERVAL_MS = 2_000;

/**
 * Serves `outbox-relay dead-letters replay`: every {@link REPLAY_REQUEST_INTERVAL_MS}, the
 * group's dead letters whose replay was requested go through the handler, as
 * {@link replayDeadLetter} does (its own transaction, inbox checked, marked replayed with
 * the effects). A failed replay records its error and clears the request; one found
 * settled meanwhile just clears it. Runs until `signal` aborts.
 */
export async function serveReplayRequests(
  target: ReplayTarget,
  signal: AbortSignal,
  onResult: (result: ReplayResult) => void,
): Promise<void> {
  const q = quoteSchema(target.schema ?? DEFAULT_SCHEMA);
  while (!signal.aborted) {
    await sleep(REPLAY_REQUEST_INTERVAL_MS, signal);
    if (signal.aborted) break;
    try {
      const { rows } = await target.pool.query<{ id: string }>(requestedReplaysSql(q), [target.groupId, 100]);
      for (const { id } of rows) {
        if (signal.aborted) break;
        let result: ReplayResult;
        try {
          result = await replayDeadLetter(target, id);
        } catch (err) {
          // Not even the failure could be recorded: the request is dropped rather than
          // retried every few seconds for ever; the operator sees it still pending.
          await target.pool.query(clearReplayRequestSql(q), [id]).catch(() => undefined);
          throw err;
        }
        if (result.status === 'missing') await target.pool.query(clearReplayRequestSql(q), [id]);
        onResult(result);
      }
    } catch (err) {
      target.logger?.warn({ err }, 'serving requested dead-letter replays failed; trying again');
    }
  }
}
