import type { ConsumedRecord } from './record.js';
import type { HandlerTx } from './transaction.js';

// What the application gives the consumer to apply records, and what happens to a record
// that keeps failing or to a stored offset the log no longer has.

/** Applies one record. Every write through `tx` commits together with the new offset. */
export type RecordHandler = (record: ConsumedRecord, tx: HandlerTx) => Promise<void>;

/**
 * Applies consecutive records of one partition at once (one multi-row statement, say).
 * Every write through `tx` commits together with the offset past the last record. The
 * records are those not applied before (the inbox has already dropped duplicates), in
 * offset order. When the call fails, nothing of it commits and the batch is split in
 * halves, each tried again on its own, down to the failing record, which alone gets the
 * retries and then the failure policy: a handler must therefore be safe to call again
 * with a subset of the records it failed on.
 */
export type BatchHandler = (records: ConsumedRecord[], tx: HandlerTx) => Promise<void>;

/**
 * What happens to a record whose handler failed on every attempt.
 * - `dead-letter`: the record is written to `dead_letters` in the transaction that moves the
 *   offset past it; the partition moves on.
 * - `block`: the partition is paused at that record (its offset is not advanced); other
 *   partitions continue. {@link Consumer.unblock} retries it.
 */
export type FailurePolicy = 'dead-letter' | 'block';

/**
 * What happens when a partition's stored offset belongs to another incarnation of its log:
 * the topic was deleted and recreated (a new topic id), or the stored offset lies beyond the
 * log's end (truncated, failed over) or before its start (records deleted before they were
 * applied). Either way it must not be used to skip records.
 * - `earliest`: log an error, emit `offsetOutOfRange`, count it, and treat the partition as a
 *   new log: apply its records from its earliest offset (the inbox still skips records of
 *   the relay that were applied already).
 * - `block`: the same report, then the partition is paused until an operator moves its
 *   offset (`outbox-relay offsets set` / `offsets rewind`).
 */
export type OffsetOutOfRangePolicy = 'earliest' | 'block';
