import pRetry, { AbortError } from 'p-retry';
import type pg from 'pg';
import { isInfrastructureError } from '../db/errors.js';
import { coerceError, describeError } from '../errors.js';
import { BATCH_BEGIN_LOCK_RESULT, batchBeginSql, DEFAULT_LOCK_TIMEOUT_SQL, lockTimeoutSql } from '../sql/consumer-batches.js';
import { advanceOffsetSql, loadOffsetsSql, lockOffsetSql, readOffsetSql } from '../sql/consumer-offsets.js';
import { insertDeadLetterSql, settleAndAdvanceSql } from '../sql/dead-letters.js';
import { HandlerFailure, PartitionRevoked, PollDeadline, ZERO, type ApplyContext, type BatchOutcome, type Counts } from './batch.js';
import { runHandler } from './handler-run.js';
import { claimInbox, unclaimInbox } from './inbox.js';
import type { ConsumedRecord } from './record.js';
import { inTransaction, type BatchConnection } from './transaction.js';

/** SQLSTATE of a statement cancelled (statement_timeout): the database's, not the records'. */
const QUERY_CANCELED = '57014';

async function storedOffset(ctx: ApplyContext, record: ConsumedRecord): Promise<number> {
  const { rows } = await ctx.pool.query<{ next_offset: string }>(loadOffsetsSql(ctx.q), [ctx.groupId, [record.topic], [record.partition]]);
  return Number(rows[0]?.next_offset ?? -1);
}


/**
 * A batch transaction, tracked while in flight. When the connection was aborted from
 * outside because the assignment was lost, whatever error that caused becomes
 * {@link PartitionRevoked}.
 */
async function batchTransaction(ctx: ApplyContext, record: ConsumedRecord, fn: (connection: BatchConnection) => Promise<BatchOutcome>): Promise<BatchOutcome> {
  let current: BatchConnection | undefined;
  try {
    return await inTransaction(
      ctx.pool,
      async (connection) => {
        current = connection;
        ctx.inFlight.add(connection);
        return fn(connection);
      },
      { begin: batchBeginSql(ctx.q, { groupId: ctx.groupId, topic: record.topic, partition: record.partition }, ctx.handlerTimeoutMs, ctx.lockTimeoutMs), shouldCommit: (result) => result.kind === 'committed' },
    );
  } catch (err) {
    if (current?.aborted === 'revoked' && !(err instanceof PartitionRevoked)) throw new PartitionRevoked('partition lost while its batch ran; batch aborted', err);
    throw err;
  } finally {
    if (current) ctx.inFlight.delete(current);
  }
}

/**
 * Checks made before a batch transaction begins: the member still owns its assignment, and
 * the topic still has the id the consumer read it with (asked once per fetch, after the
 * records were fetched, so a record of a recreated topic lying beyond the stale offset is
 * never applied under it). Returns the outcome that ends the batch here, if any.
 */
async function beforeBegin(ctx: ApplyContext, record: ConsumedRecord): Promise<BatchOutcome | undefined> {
  // Nothing began: not an aborted batch, just no batch until the rebalance is served.
  if (ctx.assignmentLost()) throw new PollDeadline(`assignment lost; the batch at offset ${record.offset} waits for the rebalance`);
  if (!(await ctx.sameLog())) return { kind: 'stale', ...ZERO };
  return undefined;
}

/**
 * The stored next offset, read under the row lock taken by the opening statements (lock
 * order: offset row, then inbox).
 */
async function lockOffset(ctx: ApplyContext, connection: BatchConnection, record: ConsumedRecord, start: number): Promise<number> {
  let rows = connection.opening.at(BATCH_BEGIN_LOCK_RESULT)?.rows ?? [];
  if (rows.length === 0) {
    // Deleted by an operator while the partition was consumed: recreate it where we are.
    const args = [ctx.groupId, record.topic, record.partition];
    await connection.query(lockTimeoutSql(ctx.lockTimeoutMs));
    await connection.query(readOffsetSql(ctx.q), [...args, start, ctx.topicId ?? null]);
    ({ rows } = await connection.query(lockOffsetSql(ctx.q), args));
    await connection.query(DEFAULT_LOCK_TIMEOUT_SQL);
  }
  return Number((rows[0] as { next_offset: string }).next_offset);
}

/**
 * One transaction over `records` (consecutive records of one partition): lock the offset
 * row and compare it with `expected`, skip what is below it or already in the inbox (one
 * claim statement for the batch), run the handler per record (or the batch handler once),
 * compare-and-set the offset past the last record done, commit. Returns `moved` (after
 * ROLLBACK) when the stored offset is not `expected`.
 */
async function attempt(ctx: ApplyContext, records: ConsumedRecord[], expected: number | undefined): Promise<BatchOutcome> {
  const first = records[0]!;
  const start = expected ?? first.offset;
  // The very first batch of a partition creates its offset row in a statement of its own:
  // inside the batch transaction, the uncommitted row would make every other consumer of
  // the partition wait for this batch, even one that took the partition over.
  const before = await beforeBegin(ctx, first);
  if (before) return before;
  if (expected === undefined) await ctx.pool.query(readOffsetSql(ctx.q), [ctx.groupId, first.topic, first.partition, start, ctx.topicId ?? null]);
  const outcome = await batchTransaction(ctx, first, async (connection): Promise<BatchOutcome> => {
    const stored = await lockOffset(ctx, connection, first, start);
    if (stored !== start) return { kind: 'moved', stored, fenced: false, ...ZERO };
    const counts = { ...ZERO };
    const due = records.filter((record) => record.offset >= stored);
    counts.skippedBelowOffset = records.length - due.length;
    counts.skipped += counts.skippedBelowOffset;
    const claims = await claimInbox(ctx, connection, due);
    const fresh = due.filter((record) => !claims.duplicates.has(record));
    counts.skipped += due.length - fresh.length;
    const applied: ConsumedRecord[] = [];
    if (ctx.batchHandler) {
      if (fresh.length > 0) await runHandler(ctx, connection, fresh, records.indexOf(fresh[0]!));
      applied.push(...fresh);
    } else {
      for (const record of fresh) {
        // Close to the poll deadline: commit what is done, poll, then go on.
        if (applied.length > 0 && ctx.pollDeadline() - Date.now() < ctx.handlerTimeoutMs) break;
        await runHandler(ctx, connection, [record], records.indexOf(record));
        applied.push(record);
      }
    }
    // The offset moves past the last record applied, or past the whole batch when every
    // record of it was applied or skipped.
    const stopped = applied.length < fresh.length ? fresh[applied.length]! : undefined;
    const next = stopped === undefined ? records.at(-1)!.offset + 1 : stopped.offset;
    if (stopped !== undefined) {
      counts.skipped = records.filter((r) => r.offset < next).length - applied.length;
      await unclaimInbox(ctx, connection, claims.claimed.filter((record) => record.offset >= next));
    }
    if (ctx.assignmentLost()) throw new PartitionRevoked('assignment lost before the batch committed; rolled back');
    // The offset moves, then deferred constraints (and constraint triggers) are checked,
    // in one message: a violation is then charged to the records like any handler error
    // instead of failing the commit, again and again, as if the database were down.
    let advanced: pg.QueryResult;
    try {
      const results = (await connection.query(
        `${settleAndAdvanceSql(ctx.q, { groupId: ctx.groupId, topic: first.topic, partition: first.partition, expected: stored, next, applied: applied.map((r) => r.offset), topicId: ctx.topicId ?? null })};
set constraints all immediate`,
      )) as unknown as pg.QueryResult[];
      advanced = results[0]!;
    } catch (err) {
      if (isInfrastructureError(err) || (err as { code?: unknown }).code === QUERY_CANCELED) throw err;
      throw new HandlerFailure(records.length === 1 ? 0 : -1, err);
    }
    if (advanced.rows.length === 0) return { kind: 'moved', stored: -1, fenced: true, ...ZERO };
    counts.applied = applied.length;
    return { kind: 'committed', next, ...counts };
  });
  if (outcome.kind === 'moved' && outcome.fenced) return { ...outcome, stored: await storedOffset(ctx, first) };
  return outcome;
}

function add(a: Counts, b: Counts): Counts {
  return { applied: a.applied + b.applied, skipped: a.skipped + b.skipped, skippedBelowOffset: a.skippedBelowOffset + b.skippedBelowOffset, deadLettered: a.deadLettered + b.deadLettered };
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
  // The failing record is known: the records before it, it alone, the rest. Not known (a
  // batch handler failed, or a deferred constraint): halves, each split again if it fails.
  const half = Math.ceil(records.length / 2);
  const parts = failedAt < 0 ? [records.slice(0, half), [], records.slice(half)] : [records.slice(0, failedAt), records.slice(failedAt, failedAt + 1), records.slice(failedAt + 1)];
  let total = { ...ZERO };
  let cursor = expected;
  for (const [i, part] of parts.entries()) {
    if (part.length === 0) continue;
    let outcome: BatchOutcome;
    try {
      outcome = i === 1 ? await applyOne(ctx, part[0]!, cursor) : await applyRecords(ctx, part, cursor);
    } catch (err) {
      // What the earlier parts committed stands: report it, and the error after it.
      if (cursor !== expected) return { kind: 'committed', next: cursor!, ...total, interrupted: err };
      throw err;
    }
    total = add(total, outcome);
    if (outcome.kind === 'committed' && outcome.interrupted !== undefined) return { ...outcome, ...total };
    if (outcome.kind !== 'committed') return { ...outcome, ...total };
    cursor = outcome.next;
    // Cut short at the poll deadline: the caller applies the rest after polling.
    if (cursor <= part.at(-1)!.offset) return { kind: 'committed', next: cursor, ...total };
  }
  return { kind: 'committed', next: cursor ?? records.at(-1)!.offset + 1, ...total };
}

/** One record with retries and backoff; after the last attempt, the failure policy. */
async function applyOne(ctx: ApplyContext, record: ConsumedRecord, expected: number | undefined): Promise<BatchOutcome> {
  const id = `${record.topic}:${record.partition}:${record.offset}`;
  const prior = ctx.attempts.get(id) ?? 0;
  let attempts = prior;
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
          const outcome = await attempt(ctx, [record], expected);
          ctx.attempts.delete(id);
          return outcome;
        } catch (err) {
          handlerFailed = err instanceof HandlerFailure;
          // Interrupted for a poll, or failed around the handler (the database, a silent
          // connection): this attempt is not charged, those charged before carry over to the
          // next try.
          if (!(err instanceof HandlerFailure)) ctx.attempts.set(id, attempts - 1);
          if (err instanceof HandlerFailure) {
            // The handler's own AbortError: no more attempts, straight to the failure policy.
            if (err.cause instanceof AbortError) lastError = err.cause.originalError;
            throw coerceError(err.cause);
          }
          throw new AbortError(coerceError(err));
        }
      },
      {
        retries: Math.max(0, ctx.maxAttempts - 1 - prior),
        minTimeout: ctx.retryMinDelayMs,
        maxTimeout: ctx.retryMaxDelayMs,
        factor: 2,
        signal: ctx.signal,
        onFailedAttempt: ({ error, attemptNumber, retriesLeft, retriesConsumed }) => {
          lastError = error;
          ctx.logger.warn({ offset: record.offset, attempt: attemptNumber, retriesLeft, err: error }, 'handler failed');
          // The backoff and the next attempt must fit before the poll deadline; if they do
          // not, poll first and go on from here (the attempts made so far still count).
          const delay = Math.min(ctx.retryMaxDelayMs, ctx.retryMinDelayMs * 2 ** retriesConsumed);
          if (retriesLeft > 0 && Date.now() + delay + ctx.handlerTimeoutMs > ctx.pollDeadline()) {
            ctx.attempts.set(id, attempts);
            throw new PollDeadline();
          }
        },
      },
    );
  } catch (err) {
    if (err instanceof PollDeadline) throw err;
    if (!handlerFailed || ctx.signal.aborted || lastError === undefined) throw err;
    lastError = err;
  }
  const error = describeError(lastError);
  if (ctx.failurePolicy === 'block') {
    ctx.attempts.delete(id);
    ctx.logger.error({ offset: record.offset, attempts, error }, 'handler failed on every attempt; partition blocked');
    return { kind: 'blocked', next: expected ?? record.offset, offset: record.offset, error, ...ZERO };
  }
  // Should the dead letter not commit now (a poll first, the assignment lost), the attempts stay spent.
  ctx.attempts.set(id, attempts);
  const outcome = await deadLetter(ctx, record, expected, error, attempts);
  ctx.attempts.delete(id);
  return outcome;
}

/** Writes the dead letter and moves the offset past the record, in one transaction. */
async function deadLetter(ctx: ApplyContext, record: ConsumedRecord, expected: number | undefined, error: string, attempts: number): Promise<BatchOutcome> {
  const start = expected ?? record.offset;
  const before = await beforeBegin(ctx, record);
  if (before) return before;
  const outcome = await batchTransaction(ctx, record, async (connection): Promise<BatchOutcome> => {
    const stored = await lockOffset(ctx, connection, record, start);
    if (stored !== start) return { kind: 'moved', stored, fenced: false, ...ZERO };
    if (ctx.assignmentLost()) throw new PartitionRevoked('assignment lost before the dead letter committed; rolled back');
    await connection.query(insertDeadLetterSql(ctx.q), [
      ctx.groupId,
      record.topic,
      record.partition,
      record.offset,
      record.key,
      record.value,
      JSON.stringify(record.headers.raw),
      error,
      attempts,
      ctx.topicId ?? null,
    ]);
    const advanced = await connection.query(advanceOffsetSql(ctx.q), [ctx.groupId, record.topic, record.partition, stored, record.offset + 1]);
    if (advanced.rows.length === 0) return { kind: 'moved', stored: -1, fenced: true, ...ZERO };
    return { kind: 'committed', next: record.offset + 1, ...ZERO, deadLettered: 1 };
  });
  if (outcome.kind === 'moved' && outcome.fenced) return { ...outcome, stored: await storedOffset(ctx, record) };
  if (outcome.kind === 'committed') ctx.logger.error({ offset: record.offset, attempts, error }, 'record dead-lettered');
  return outcome;
}
