import type pg from 'pg';
import { coerceError, OutboxError } from '../errors.js';
import type { Logger } from '../log.js';
import type { Tracing } from '../tracing.js';
import type { BatchHandler, FailurePolicy, RecordHandler } from './handler.js';
import type { ConsumedRecord } from './record.js';
import type { BatchConnection } from './transaction.js';

// What a batch of one partition is given (ApplyContext), what it comes to (BatchOutcome),
// and the errors that end it early (a handler's failure, a lost partition, the poll deadline).

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
  /** A handler ran out of time: its own doing, or (`silentLink` says why) its connection's. */
  onHandlerTimeout: (record: ConsumedRecord, silentLink?: string) => void;
  logger: Logger;
  /** Aborts retry backoff (on stop); the record is then left for the next owner. */
  signal: AbortSignal;
}

export interface Counts {
  applied: number;
  /** Records not applied because they were already: below the stored offset, or in the inbox. */
  skipped: number;
  /** Of `skipped`, those below the stored offset (redelivered after a seek or rebalance). */
  skippedBelowOffset: number;
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
export class HandlerFailure extends Error {
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

export const ZERO: Counts = { applied: 0, skipped: 0, skippedBelowOffset: 0, deadLettered: 0 };
