import pRetry, { AbortError } from 'p-retry';
import type pg from 'pg';
import { coerceError, describeError } from '../errors.js';
import type { Logger } from '../log.js';
import type { FailurePolicy, RecordHandler } from './options.js';
import type { ConsumedRecord } from './record.js';
import { advanceOffsetSql } from './sql/advanceOffset.js';
import { settleDeadLettersSql } from './sql/settleDeadLetters.js';
import { claimInboxSql } from './sql/claimInbox.js';
import { insertDeadLetterSql } from './sql/insertDeadLetter.js';
import { loadOffsetsSql } from './sql/loadOffsets.js';
import { readOffsetSql } from './sql/readOffset.js';
import { handlerTx, inTransaction } from './transaction.js';

export interface ApplyContext {
  pool: pg.Pool;
  q: string;
  groupId: string;
  handler: RecordHandler;
  inbox: boolean;
  maxAttempts: number;
  retryMinDelayMs: number;
  retryMaxDelayMs: number;
  failurePolicy: FailurePolicy;
  logger: Logger;
  /** Aborts retry backoff (on stop); the record is then left for the next owner. */
  signal: AbortSignal;
}

export interface Counts {
  applied: number;
  skipped: number;
  deadLettered: number;
}

/**
 * What one batch of one partition came to.
 * - `committed`: effects and `next` are stored.
 * - `moved`: the stored offset is not where this consumer expected it (an operator set it,
 *   or another consumer advanced it): nothing was applied; seek to `stored`. `fenced` when
 *   handlers had run and the compare-and-set at commit refused them (a zombie).
 * - `blocked`: `block` policy; records before `offset` are committed, `next` is stored.
 */
export type BatchOutcome =
  | ({ kind: 'committed'; next: number } & Counts)
  | ({ kind: 'moved'; stored: number; fenced: boolean } & Counts)
  | ({ kind: 'blocked'; next: number; offset: number; error: string } & Counts);

/** A handler threw (or left the transaction unusable) while applying `records[index]`. */
class HandlerFailure extends Error {
  constructor(
    readonly index: number,
    cause: unknown,
  ) {
    super(coerceError(cause).message, { cause });
  }
}

const ZERO: Counts = { applied: 0, skipped: 0, deadLettered: 0 };

/** Errors of the database connection itself: retried by the loop, never charged to a record. */
export function isInfrastructureError(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && (code.startsWith('08') || ['57P01', '57P02', '57P03', '53300', 'ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE'].includes(code))) {
    return true;
  }
  const message = err instanceof Error ? err.message : '';
  return /Connection terminated|connection timeout|Client has encountered a connection error/i.test(message);
}

/** True when the client still talks to the server (an aborted transaction still counts). */
async function connectionAlive(client: { query(text: string): Promise<unknown> }): Promise<boolean> {
  try {
    await client.query('select 1');
    return true;
  } catch (err) {
    return !isInfrastructureError(err);
  }
}

async function storedOffset(ctx: ApplyContext, record: ConsumedRecord): Promise<number> {
  const { rows } = await ctx.pool.query<{ next_offset: string }>(loadOffsetsSql(ctx.q), [ctx.groupId, [record.topic], [record.partition]]);
  return Number(rows[0]?.next_offset ?? -1);
}

/**
 * One transaction over `records` (consecutive records of one partition): read the stored
 * offset, skip what is below it or already in the inbox, run the handler, compare-and-set
 * the offset to last + 1, commit. Returns `moved` (after ROLLBACK) when the stored offset is
 * not `expected`, before or after the handlers ran.
 */
async function attempt(ctx: ApplyContext, records: ConsumedRecord[], expected: number | undefined): Promise<BatchOutcome> {
  const first = records[0]!;
  const last = records.at(-1)!;
  const start = expected ?? first.offset;
  // The very first batch of a partition creates its offset row in a statement of its own:
  // inside the batch transaction, the uncommitted row would make every other consumer of
  // the partition wait for this batch, even one that took the partition over.
  if (expected === undefined) await ctx.pool.query(readOffsetSql(ctx.q), [ctx.groupId, first.topic, first.partition, start]);
  const outcome = await inTransaction(
    ctx.pool,
    async (client): Promise<BatchOutcome> => {
      const read = await client.query<{ next_offset: string }>(readOffsetSql(ctx.q), [ctx.groupId, first.topic, first.partition, start]);
      if (read.rows.length === 0) throw Object.assign(new Error('offset row created concurrently; retry'), { code: '08000' });
      const stored = Number(read.rows[0]!.next_offset);
      if (stored !== start) return { kind: 'moved', stored, fenced: false, ...ZERO };
      const tx = handlerTx(client);
      const counts = { ...ZERO };
      const appliedOffsets: number[] = [];
      for (const [index, record] of records.entries()) {
        if (record.offset < stored) {
          counts.skipped++;
          continue;
        }
        try {
          const outboxId = ctx.inbox ? record.headers.outboxId : undefined;
          if (outboxId !== undefined) {
            const claim = await client.query(claimInboxSql(ctx.q), [ctx.groupId, outboxId, record.topic, record.partition, record.offset]);
            if (claim.rows.length === 0) {
              counts.skipped++;
              continue;
            }
          }
          await ctx.handler(record, tx);
        } catch (err) {
          // A connection-like error (ECONNREFUSED, ...) may come from the handler's own calls
          // to other services: it is the database's only if this transaction's connection is
          // really gone. Otherwise it is the handler's failure, charged and dead-lettered.
          if (isInfrastructureError(err) && !(await connectionAlive(client))) throw err;
          throw new HandlerFailure(index, err);
        }
        counts.applied++;
        appliedOffsets.push(record.offset);
      }
      let advanced;
      try {
        // Deferred constraints (and constraint triggers) are checked here rather than at
        // COMMIT, so that a violation is charged to the records like any handler error
        // instead of failing the commit, again and again, as if the database were down.
        await client.query('set constraints all immediate');
        if (appliedOffsets.length > 0) {
          await client.query(settleDeadLettersSql(ctx.q), [ctx.groupId, first.topic, first.partition, appliedOffsets]);
        }
        advanced = await client.query(advanceOffsetSql(ctx.q), [ctx.groupId, first.topic, first.partition, stored, last.offset + 1]);
      } catch (err) {
        // 25P02: a handler swallowed its own SQL error and left the transaction aborted.
        if (isInfrastructureError(err)) throw err;
        throw new HandlerFailure(records.length === 1 ? 0 : -1, err);
      }
      if (advanced.rows.length === 0) return { kind: 'moved', stored: -1, fenced: true, ...ZERO };
      return { kind: 'committed', next: last.offset + 1, ...counts };
    },
    (result) => result.kind === 'committed',
  );
  if (outcome.kind === 'moved' && outcome.fenced) return { ...outcome, stored: await storedOffset(ctx, first) };
  return outcome;
}

function add(a: Counts, b: Counts): Counts {
  return { applied: a.applied + b.applied, skipped: a.skipped + b.skipped, deadLettered: a.deadLettered + b.deadLettered };
}

/**
 * Applies consecutive records of one partition. Fast path: all in one transaction. When a
 * handler fails, that transaction is rolled back and the batch is split: the records before
 * the failing one go again as one transaction, the failing record alone (with retries, then
 * the failure policy), then the rest. Each retry is a transaction of its own rather than a
 * savepoint: nothing (locks, the connection) is held across the backoff, and an error that
 * dooms the whole transaction (serialization failure, an aborted transaction the handler
 * swallowed) cannot take the neighbours' effects with it.
 */
export async function applyRecords(ctx: ApplyContext, records: ConsumedRecord[], expected: number | undefined): Promise<BatchOutcome> {
  if (records.length === 0) return { kind: 'committed', next: expected ?? 0, ...ZERO };
  let failedAt: number;
  try {
    return await attempt(ctx, records, expected);
  } catch (err) {
    if (!(err instanceof HandlerFailure)) throw err;
    if (records.length === 1) return applyOne(ctx, records[0]!, expected);
    failedAt = err.index;
  }
  if (failedAt < 0) return applyEach(ctx, records, expected);
  let total = { ...ZERO };
  let cursor = expected;
  const parts = [records.slice(0, failedAt), records.slice(failedAt, failedAt + 1), records.slice(failedAt + 1)];
  for (const [i, part] of parts.entries()) {
    if (part.length === 0) continue;
    const outcome = i === 1 ? await applyOne(ctx, part[0]!, cursor) : await applyRecords(ctx, part, cursor);
    total = add(total, outcome);
    if (outcome.kind !== 'committed') return { ...outcome, ...total };
    cursor = outcome.next;
  }
  return { kind: 'committed', next: cursor ?? records.at(-1)!.offset + 1, ...total };
}

async function applyEach(ctx: ApplyContext, records: ConsumedRecord[], expected: number | undefined): Promise<BatchOutcome> {
  let total = { ...ZERO };
  let cursor = expected;
  for (const record of records) {
    const outcome = await applyOne(ctx, record, cursor);
    total = add(total, outcome);
    if (outcome.kind !== 'committed') return { ...outcome, ...total };
    cursor = outcome.next;
  }
  return { kind: 'committed', next: cursor!, ...total };
}

/** One record with retries and backoff; after the last attempt, the failure policy. */
async function applyOne(ctx: ApplyContext, record: ConsumedRecord, expected: number | undefined): Promise<BatchOutcome> {
  let attempts = 0;
  let lastError: unknown;
  // Whether the last attempt failed in the handler (charged to the record) or around it
  // (the database itself: retried by the loop, never charged). Decided where the error is
  // caught, not guessed afterwards from its message.
  let handlerFailed = false;
  try {
    return await pRetry(
      async () => {
        attempts++;
        try {
          return await attempt(ctx, [record], expected);
        } catch (err) {
          handlerFailed = err instanceof HandlerFailure;
          if (err instanceof HandlerFailure) {
            // The handler's own AbortError: no more attempts, straight to the failure policy.
            if (err.cause instanceof AbortError) lastError = err.cause.originalError;
            throw coerceError(err.cause);
          }
          throw new AbortError(coerceError(err));
        }
      },
      {
        retries: ctx.maxAttempts - 1,
        minTimeout: ctx.retryMinDelayMs,
        maxTimeout: ctx.retryMaxDelayMs,
        factor: 2,
        signal: ctx.signal,
        onFailedAttempt: ({ error, attemptNumber, retriesLeft }) => {
          lastError = error;
          ctx.logger.warn({ offset: record.offset, attempt: attemptNumber, retriesLeft, err: error }, 'handler failed');
        },
      },
    );
  } catch (err) {
    if (!handlerFailed || ctx.signal.aborted || lastError === undefined) throw err;
    lastError = err;
  }
  const error = describeError(lastError);
  if (ctx.failurePolicy === 'block') {
    ctx.logger.error({ offset: record.offset, attempts, error }, 'handler failed on every attempt; partition blocked');
    return { kind: 'blocked', next: expected ?? record.offset, offset: record.offset, error, ...ZERO };
  }
  return deadLetter(ctx, record, expected, error, attempts);
}

/** Writes the dead letter and moves the offset past the record, in one transaction. */
async function deadLetter(ctx: ApplyContext, record: ConsumedRecord, expected: number | undefined, error: string, attempts: number): Promise<BatchOutcome> {
  const start = expected ?? record.offset;
  const outcome = await inTransaction(
    ctx.pool,
    async (client): Promise<BatchOutcome> => {
      const read = await client.query<{ next_offset: string }>(readOffsetSql(ctx.q), [ctx.groupId, record.topic, record.partition, start]);
      const stored = Number(read.rows[0]?.next_offset ?? -1);
      if (stored !== start) return { kind: 'moved', stored, fenced: false, ...ZERO };
      await client.query(insertDeadLetterSql(ctx.q), [
        ctx.groupId,
        record.topic,
        record.partition,
        record.offset,
        record.key,
        record.value,
        JSON.stringify(record.headers.raw),
        error,
        attempts,
      ]);
      const advanced = await client.query(advanceOffsetSql(ctx.q), [ctx.groupId, record.topic, record.partition, stored, record.offset + 1]);
      if (advanced.rows.length === 0) return { kind: 'moved', stored: -1, fenced: true, ...ZERO };
      return { kind: 'committed', next: record.offset + 1, applied: 0, skipped: 0, deadLettered: 1 };
    },
    (result) => result.kind === 'committed',
  );
  if (outcome.kind === 'moved' && outcome.fenced) return { ...outcome, stored: await storedOffset(ctx, record) };
  if (outcome.kind === 'committed') ctx.logger.error({ offset: record.offset, attempts, error }, 'record dead-lettered');
  return outcome;
}
