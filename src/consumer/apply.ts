import pRetry, { AbortError } from 'p-retry';
import type pg from 'pg';
import { isInfrastructureError } from '../db/errors.js';
import { coerceError, describeError, OutboxError } from '../errors.js';
import type { Logger } from '../log.js';
import type { Tracing } from '../tracing.js';
import type { BatchHandler, FailurePolicy, RecordHandler } from './options.js';
import type { ConsumedRecord } from './record.js';
import { advanceOffsetSql } from '../sql/consumer-offsets.js';
import { claimInboxSql, unclaimInboxSql } from '../sql/consumer-inbox.js';
import { insertDeadLetterSql } from '../sql/dead-letters.js';
import { loadOffsetsSql } from '../sql/consumer-offsets.js';
import { lockOffsetSql } from '../sql/consumer-offsets.js';
import { readOffsetSql } from '../sql/consumer-offsets.js';
import { settleAndAdvanceSql } from '../sql/dead-letters.js';
import { BATCH_BEGIN_LOCK_RESULT, batchBeginSql, DEFAULT_LOCK_TIMEOUT_SQL, lockTimeoutSql } from '../sql/consumer-batches.js';
import { PING_SQL } from '../sql/catalog.js';
import { inTransaction, raceHandler, type BatchConnection, type HandlerRun } from './transaction.js';

export interface ApplyContext {
  pool: pg.Pool;
  q: string;
  groupId: string;
  handler: RecordHandler;
  /** When set, called once per batch transaction with all its records instead of `handler` per record. */
  batchHandler: BatchHandler | undefined;
  /** A span per handler call (see Tracing). */
  tracing: Tracing;
  inbox: boolean;
  maxAttempts: number;
  retryMinDelayMs: number;
  retryMaxDelayMs: number;
  failurePolicy: FailurePolicy;
  handlerTimeoutMs: number;
  lockTimeoutMs: number;
  /** Topic id of the partition's log, stored with a new offset row. */
  topicId: string | undefined;
  /** When this member must have polled again (ms since the epoch), a margin before the group would give its partitions away. */
  pollDeadline: () => number;
  /** True once the member lost its assignment: nothing may begin or commit any more. */
  assignmentLost: () => boolean;
  /** Batch transactions in flight, so that a lost assignment can abort them at the database. */
  inFlight: Set<BatchConnection>;
  /**
   * Whether the partition's topic still has the id this consumer read it with, asked once
   * per fetch and awaited before each batch transaction begins: records of a recreated
   * topic that happen to lie beyond the stale offset are never applied under it.
   */
  sameLog: () => Promise<boolean>;
  /** Attempts already charged to records (`topic:partition:offset`) whose retries were interrupted by a poll. */
  attempts: Map<string, number>;
  /** Told when a handler overran its time and its transaction was aborted. */
  onHandlerTimeout: (record: ConsumedRecord) => void;
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
 * - `committed`: effects and `next` are stored. `next` may stop short of the batch's end
 *   when the poll deadline came close (the rest is applied after the next poll), or when
 *   a later part of a split batch failed: `interrupted` is then that part's error.
 * - `moved`: the stored offset is not where this consumer expected it (an operator set it,
 *   or another consumer advanced it): nothing was applied; seek to `stored`. `fenced` when
 *   handlers had run and the compare-and-set at commit refused them (a zombie).
 * - `blocked`: `block` policy; records before `offset` are committed, `next` is stored.
 * - `stale`: the topic was recreated under the consumer: rolled back, nothing applied; the
 *   stored offset belongs to the old log (see incarnation.ts).
 */
export type BatchOutcome =
  | ({ kind: 'committed'; next: number; interrupted?: unknown } & Counts)
  | ({ kind: 'moved'; stored: number; fenced: boolean } & Counts)
  | ({ kind: 'blocked'; next: number; offset: number; error: string } & Counts)
  | ({ kind: 'stale' } & Counts);

/** A handler threw (or left the transaction unusable) while applying `records[index]`. */
class HandlerFailure extends Error {
  constructor(
    readonly index: number,
    cause: unknown,
  ) {
    super(coerceError(cause).message, { cause });
  }
}

/**
 * This member lost (or is about to lose) its partitions while a batch ran: the batch was
 * aborted at the database and nothing of it commits. Not the record's fault: nothing is
 * charged, the records go to whoever owns the partition next.
 */
export class PartitionRevoked extends OutboxError {
  constructor(message: string, cause?: unknown) {
    super('PARTITION_REVOKED', message, { cause, retriable: true });
  }
}

/**
 * The poll deadline is too close to start another handler (it could overrun it): the batch
 * stops here, uncommitted from this record on, and goes on after the next poll. Nothing is
 * charged; attempts made so far are remembered.
 */
export class PollDeadline extends Error {
  constructor(message = 'poll deadline too close to start a handler; continuing after the next poll') {
    super(message);
  }
}

const ZERO: Counts = { applied: 0, skipped: 0, deadLettered: 0 };

/** SQLSTATE of a statement cancelled (statement_timeout): the database's, not the records'. */
const QUERY_CANCELED = '57014';

/** True when the client still talks to the server (an aborted transaction still counts). */
async function connectionAlive(connection: BatchConnection): Promise<boolean> {
  try {
    await connection.client.query(PING_SQL);
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
 * Runs the handler for one record (`records` of one), or the batch handler for `records`,
 * under `handlerTimeoutMs`. Past it — or when the assignment is lost while it runs — the
 * transaction is aborted at the database, so a hung handler holds no lock and commits
 * nothing, whatever it does later. A failure is charged to `records[0]` at `index` when it
 * is the only record, to no record in particular (index -1) otherwise.
 */
async function runHandler(ctx: ApplyContext, connection: BatchConnection, records: ConsumedRecord[], index: number): Promise<void> {
  // A handler is started only with its whole time before the poll deadline, so that no
  // batch of this member is open when the group hands its partitions to another.
  if (ctx.pollDeadline() - Date.now() < ctx.handlerTimeoutMs) throw new PollDeadline();
  // The spans end with the call's outcome as judged here (a timeout, a swallowed error),
  // not when a hung handler's promise settles, if ever.
  const spans = records.map((record) => ctx.tracing.startProcess(record, ctx.groupId));
  const batch = ctx.batchHandler;
  const call = batch ? () => batch(records, connection.tx) : () => spans[0]!.run(() => ctx.handler(records[0]!, connection.tx));
  try {
    await judgeHandler(ctx, connection, records[0]!, records.length === 1 ? index : -1, await raceHandler(connection, call, ctx.handlerTimeoutMs));
    for (const span of spans) span.end();
  } catch (err) {
    for (const span of spans) span.end(err instanceof HandlerFailure ? err.cause : err);
    throw err;
  }
}

async function judgeHandler(ctx: ApplyContext, connection: BatchConnection, record: ConsumedRecord, index: number, run: HandlerRun): Promise<void> {
  if (run.kind === 'expired') await connection.abort('handler-timeout');
  if (connection.aborted === 'revoked') throw new PartitionRevoked(`assignment lost while the handler ran (offset ${record.offset}); batch aborted`);
  if (connection.aborted === 'handler-timeout') {
    ctx.onHandlerTimeout(record);
    throw new HandlerFailure(index, new OutboxError('HANDLER_TIMEOUT', `handler did not finish within handlerTimeoutMs (${ctx.handlerTimeoutMs} ms); its transaction was aborted`));
  }
  // Misuse of the transaction is not retried: it would fail the same way every time.
  if (connection.misuse) throw new HandlerFailure(index, new AbortError(connection.misuse));
  if (connection.transactionEnded) {
    throw new HandlerFailure(index, new AbortError(new OutboxError('TX_CONTROL_REFUSED', 'the handler ended the consumer transaction (COMMIT or ROLLBACK)')));
  }
  if (run.kind === 'failed') {
    // A connection-like error (ECONNREFUSED, ...) may come from the handler's own calls
    // to other services: it is the database's only if this transaction's connection is
    // really gone. Otherwise it is the handler's failure, charged and dead-lettered.
    if (isInfrastructureError(run.error) && !(await connectionAlive(connection))) throw run.error;
    throw new HandlerFailure(index, run.error);
  }
  if (connection.transactionFailed) {
    throw new HandlerFailure(index, new Error('the handler swallowed a database error: the transaction is aborted (SQLSTATE 25P02)'));
  }
}

/** Claims in the inbox: records claimed now, and records already applied (or earlier in this batch with the same id). */
interface Claims {
  claimed: ConsumedRecord[];
  duplicates: Set<ConsumedRecord>;
}

/**
 * Claims the outbox ids of `records` in one statement (see claimInboxSql). Records without
 * a source or an outbox id header, or all of them with the inbox off, are not claimed:
 * their offsets alone decide. A record whose (source, id) comes again later in the batch
 * is claimed once, for its first occurrence.
 */
async function claimInbox(ctx: ApplyContext, connection: BatchConnection, records: ConsumedRecord[]): Promise<Claims> {
  const claims: Claims = { claimed: [], duplicates: new Set() };
  if (!ctx.inbox) return claims;
  const byId = new Map<string, ConsumedRecord>();
  for (const record of records) {
    const { source, outboxId } = record.headers;
    if (source === undefined || outboxId === undefined) continue;
    const id = JSON.stringify([source, outboxId]);
    if (byId.has(id)) claims.duplicates.add(record);
    else byId.set(id, record);
  }
  if (byId.size === 0) return claims;
  const candidates = [...byId.values()];
  const { rows } = await connection.query(claimInboxSql(ctx.q), [
    ctx.groupId,
    candidates[0]!.topic,
    candidates[0]!.partition,
    ctx.topicId ?? null,
    candidates.map((r) => r.headers.source),
    candidates.map((r) => r.headers.outboxId),
    candidates.map((r) => r.offset),
  ]);
  const won = new Set((rows as { source: string; outbox_id: string }[]).map((r) => JSON.stringify([r.source, r.outbox_id])));
  for (const [id, record] of byId) {
    if (won.has(id)) claims.claimed.push(record);
    else claims.duplicates.add(record);
  }
  return claims;
}

async function unclaimInbox(ctx: ApplyContext, connection: BatchConnection, records: ConsumedRecord[]): Promise<void> {
  if (records.length === 0) return;
  await connection.query(unclaimInboxSql(ctx.q), [ctx.groupId, records.map((r) => r.headers.source), records.map((r) => r.headers.outboxId)]);
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
    counts.skipped += records.length - due.length;
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
          // Interrupted for a poll: the attempts charged so far carry over to the next try.
          if (err instanceof PollDeadline) ctx.attempts.set(id, attempts - 1);
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
    return { kind: 'committed', next: record.offset + 1, applied: 0, skipped: 0, deadLettered: 1 };
  });
  if (outcome.kind === 'moved' && outcome.fenced) return { ...outcome, stored: await storedOffset(ctx, record) };
  if (outcome.kind === 'committed') ctx.logger.error({ offset: record.offset, attempts, error }, 'record dead-lettered');
  return outcome;
}
