import { describeError } from '../errors.js';
import { classifyKafkaError, isRecordTooLarge } from '../kafka/errors.js';
import type { Delivered, TransactionalProducer } from '../kafka/producer.js';
import type { Logger } from '../log.js';
import { markFailedSql } from '../sql/outbox-marks.js';
import type { ClaimedRow } from '../sql/outbox-claim.js';
import { cutBatch, type Item } from './batch-cut.js';
import { BatchLifecycle } from './batch-state.js';
import { checkpointKey, encodeCheckpoint } from './checkpoint.js';
import { faultPoint } from './faults.js';
import { markCheckpointSent } from './reconcile.js';
import { toRecord, tracedRecord } from './records.js';
import { isRowDatabaseError, type SetAsideRows } from './set-aside.js';
import type { ShardContext } from './shard-context.js';

/** How long a producer dropped after a refused record may take to flush: nothing of it is wanted. */
const DISCARD_TIMEOUT_MS = 200;

/** Milliseconds since `start` (a performance.now() reading), to a tenth. */
export function msSince(start: number): number {
  return Math.round((performance.now() - start) * 10) / 10;
}

type TransactOutcome = { kind: 'committed' } | { kind: 'stopped' } | { kind: 'row-errors'; errors: Map<number, unknown> };

/** What a publisher needs of the shard worker that owns it. */
export interface PublisherDeps {
  ctx: ShardContext;
  shard: number;
  log: Logger;
  signal: AbortSignal;
  /** Rows the database refused to mark, kept out of the claims for a while (shared with the claim). */
  setAside: SetAsideRows;
  /** The shard's producer, taken over first if there is none; `undefined` once the shard is left. */
  producer(): Promise<TransactionalProducer | undefined>;
  /** Drops the producer: its open transaction is aborted when the next one initialises. */
  discardProducer(timeoutMs?: number): Promise<void>;
  /** The checkpoint topic's id when the shard last reconciled: the incarnation its cursor is in. */
  checkpointTopicId(): string | null;
}

/**
 * Publishes one shard's claimed rows: each Kafka transaction holds records and a
 * checkpoint listing their ids, and its rows are marked sent only after its commit.
 * Rows the broker refuses for themselves are isolated (each tried alone) and marked failed
 * or dead; the other keys go on.
 */
export class ShardPublisher {
  private readonly checkpointPartition: number;
  private readonly checkpointKey: string;
  private batchSeq = 0;
  /** How long the claim took (ms): reported with the first transaction it fed. */
  private claimMs = 0;

  private readonly ctx: ShardContext;
  private readonly shard: number;
  private readonly log: Logger;
  private readonly signal: AbortSignal;

  constructor(private readonly deps: PublisherDeps) {
    ({ ctx: this.ctx, shard: this.shard, log: this.log, signal: this.signal } = deps);
    this.checkpointPartition = this.shard % this.ctx.checkpointPartitions;
    this.checkpointKey = checkpointKey(this.ctx.options.group, this.shard);
  }

  /**
   * Publishes claimed rows. A due retry (a row that failed before) goes alone in a
   * transaction of its own, so a row the broker refuses again never takes a whole batch
   * down with it; the others go together, cut before `maxBatchBytes`.
   */
  async publish(rows: ClaimedRow[], claimMs: number): Promise<void> {
    this.claimMs = claimMs;
    let topics = await this.ctx.topics.lookup(rows.map((r) => r.topic));
    const missing = rows.filter((r) => !topics.get(r.topic)?.exists).map((r) => r.topic);
    if (missing.length > 0) topics = new Map([...topics, ...(await this.ctx.topics.lookupFresh(missing))]);
    const { maxRecordBytes, maxBatchBytes } = this.ctx.options;
    const { setAside, retries, items } = cutBatch(rows, topics, { maxRecordBytes, maxBatchBytes }, (row) => toRecord(row, this.ctx.source, this.log));
    for (const { row, reason, dead } of setAside) await this.markFailed(row, reason, { dead });
    // Retries first, each alone: a key's retry is always its earliest row in this batch.
    for (const retry of retries) {
      if (this.signal.aborted) return;
      await this.publishItems([retry]);
    }
    if (items.length > 0 && !this.signal.aborted) await this.publishItems(items);
  }

  /**
   * One transaction of `items`. When the broker refuses records (for themselves: too
   * large for the topic, not allowed), librdkafka dooms the transaction, which is aborted.
   * A refused record may only have shared a broker batch with the guilty one, so each
   * refused record is tried again alone, once, now: one refused alone is marked failed
   * (its key waits; it is retried alone after its backoff), or dead at once if it was
   * refused as too large, since the topic accepts no record that large. The records that
   * were not refused stay pending for the next claim, and so does a refused record with an
   * earlier row of its key among them (publishing it now would overtake that row).
   */
  private async publishItems(items: Item[]): Promise<boolean> {
    const outcome = await this.transact(items);
    if (outcome.kind === 'committed') {
      for (const item of items) this.deps.setAside.delete(item.row.id);
      // A row that had failed before is sent: the rows held behind it may go now.
      if (items.some((i) => i.row.attempts > 0)) await this.ctx.releaseHeld();
      return true;
    }
    if (outcome.kind === 'stopped') return false;
    if (items.length === 1) {
      const error = outcome.errors.get(0);
      const tooLarge = isRecordTooLarge(error);
      const reason = describeError(error) + (tooLarge ? ' (refused alone in its transaction: the topic accepts no record this large)' : '');
      await this.markFailed(items[0]!.row, reason, { dead: tooLarge });
      return false;
    }
    this.log.warn({ refused: outcome.errors.size, rows: items.length }, 'broker refused records; trying each refused one alone');
    const waiting = new Set<string>();
    for (const [index, item] of items.entries()) {
      if (this.signal.aborted) return false;
      const key = item.row.key;
      if (!outcome.errors.has(index) || (key !== null && waiting.has(key))) {
        if (key !== null) waiting.add(key);
        continue;
      }
      // The later rows of its key may go only after it did.
      if (!(await this.publishItems([item])) && key !== null) waiting.add(key);
    }
    return false;
  }

  /** One Kafka transaction, in its span (see Tracing): records + checkpoint, commit, then mark sent. */
  private async transact(items: Item[]): Promise<TransactOutcome> {
    const producer = await this.deps.producer();
    if (!producer) return { kind: 'stopped' };
    const span = this.ctx.tracing.startTransaction(
      items.map((i) => i.row),
      { 'outbox.relay.group': this.ctx.options.group, 'outbox.relay.shard': this.shard },
    );
    const batch = new BatchLifecycle();
    try {
      const outcome = await this.transactWith(producer, batch, items, (i) => span.traceparentFor(i));
      span.end(outcome.kind === 'row-errors' ? new Error(`the broker refused ${outcome.errors.size} of ${items.length} records`) : undefined);
      return outcome;
    } catch (err) {
      span.end(err);
      // A Kafka transaction was open and is abandoned (aborted when the producer is rebuilt).
      if (['producing', 'committing', 'aborted'].includes(batch.state)) this.ctx.metrics.aborts.inc({ reason: classifyKafkaError(err) });
      throw err;
    }
  }

  private async transactWith(
    producer: TransactionalProducer,
    batch: BatchLifecycle,
    items: Item[],
    traceparentFor: (index: number) => string | undefined,
  ): Promise<TransactOutcome> {
    const { options } = this.ctx;
    const seq = ++this.batchSeq;
    const clock = performance.now();
    // The claim is counted with the first transaction it fed only.
    const phases = { claimMs: this.claimMs, beginMs: 0, produceMs: 0, checkpointMs: 0, commitMs: 0, markMs: 0 };
    this.claimMs = 0;
    let last = clock;
    const lap = () => {
      const ms = msSince(last);
      last = performance.now();
      return ms;
    };
    await producer.begin();
    phases.beginMs = lap();
    batch.to('producing');
    const limit = options.maxRecordBytes;
    const deliveries = items.map((item, i) => producer.produce(tracedRecord(item.record, item.row.traceparent, traceparentFor(i), limit)));
    // The checkpoint goes with the records, not after their delivery: it lists their ids
    // only, so the transaction waits for one round of deliveries instead of two (the mark
    // after the commit records where each row landed).
    const checkpointDelivery = producer.produce({
      topic: options.checkpointTopic,
      partition: this.checkpointPartition,
      key: this.checkpointKey,
      value: encodeCheckpoint({
        v: 2,
        instance: this.ctx.instanceId,
        group: options.group,
        shard: this.shard,
        relay: options.relayId,
        ids: items.map((i) => i.row.id),
      }),
      headers: [],
    });
    // Settled with the records or after them; awaited only when they all went.
    checkpointDelivery.catch(() => undefined);
    // A record refused for itself (too large for the topic, not allowed) dooms the
    // transaction, and librdkafka keeps the records queued behind it until their delivery
    // timeout: an abort would wait that long. So the producer is dropped at the first such
    // refusal, which settles every pending delivery at once; its open transaction is
    // aborted when the next producer of this transactional id initialises (takeOver).
    const rowErrors = new Map<number, unknown>();
    let discarding: Promise<void> | undefined;
    deliveries.forEach((delivery, i) =>
      delivery.catch((err: unknown) => {
        if (classifyKafkaError(err) !== 'row') return;
        rowErrors.set(i, err);
        discarding ??= this.deps.discardProducer(DISCARD_TIMEOUT_MS);
      }),
    );
    const settled = await Promise.allSettled(deliveries);
    const failed = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
    if (failed) {
      batch.to('aborted');
      if (rowErrors.size === 0) throw failed.reason; // transient or fatal: the producer is rebuilt
      this.ctx.metrics.aborts.inc({ reason: 'row' });
      await discarding;
      return { kind: 'row-errors', errors: rowErrors };
    }
    const delivered = settled.map((s) => (s as PromiseFulfilledResult<Delivered>).value);
    phases.produceMs = lap();
    const checkpoint = await checkpointDelivery;
    phases.checkpointMs = lap();
    batch.to('committing');
    await faultPoint('before-kafka-commit', { shard: this.shard, rows: items.length });
    await producer.commit(options.transactionOperationTimeoutMs);
    phases.commitMs = lap();
    batch.to('marking');
    await faultPoint('after-kafka-commit', { shard: this.shard, rows: items.length });
    await this.markSent(
      items.map((i) => i.row.id),
      delivered.map((d) => d.partition),
      delivered.map((d) => d.offset),
      checkpoint.offset,
    );
    phases.markMs = lap();
    batch.to('done');
    const durationMs = Math.round(performance.now() - clock);
    this.observe(items, delivered, durationMs);
    this.log.debug({ batch: seq, rows: items.length, durationMs, ...phases }, 'batch published');
    this.ctx.events.emit('batch', { shard: this.shard, rows: items.length, durationMs, phases });
    return { kind: 'committed' };
  }

  private observe(items: Item[], delivered: Delivered[], durationMs: number): void {
    const { metrics } = this.ctx;
    this.ctx.activity.recordPublished(items.map((i) => i.row.topic), delivered.map((d) => d.partition));
    const now = Date.now();
    const perTopic = new Map<string, number>();
    for (const { row } of items) {
      perTopic.set(row.topic, (perTopic.get(row.topic) ?? 0) + 1);
      metrics.commitToPublish.observe(Math.max(0, now - row.created_at.getTime()) / 1000);
    }
    for (const [topic, n] of perTopic) metrics.published.inc({ topic }, n);
    metrics.batches.inc();
    metrics.batchDuration.observe(durationMs / 1000);
  }

  private async markSent(ids: string[], partitions: number[], offsets: number[], checkpointOffset: number): Promise<number> {
    return markCheckpointSent(this.ctx.pool, this.ctx.options.q, {
      group: this.ctx.options.group,
      shard: this.shard,
      ids,
      partitions,
      offsets,
      checkpointOffset,
      checkpointPartition: this.checkpointPartition,
      checkpointTopicId: this.deps.checkpointTopicId(),
    });
  }

  /**
   * Records a failed attempt on the row (markFailedSql). When the database refuses that
   * for the row itself (a constraint it breaks, an index entry too large: see
   * isRowDatabaseError), the row is set aside instead (SetAsideRows) and the batch goes on:
   * one row the database cannot mark must not stop every key of the shard. Any other
   * error fails the shard cycle, which retries.
   */
  private async markFailed(row: ClaimedRow, error: string, { dead = false } = {}): Promise<void> {
    const { options, pool } = this.ctx;
    let rows: Array<{ state: string; attempts: number }>;
    try {
      ({ rows } = await pool.query<{ state: string; attempts: number }>(markFailedSql(options.q), [
        row.id,
        error,
        options.maxAttempts,
        options.rowBackoff.minMs,
        options.rowBackoff.maxMs,
        dead,
      ]));
    } catch (err) {
      if (!isRowDatabaseError(err)) throw err;
      const until = this.deps.setAside.add(row);
      if (until === undefined) throw err;
      this.log.error(
        { err, id: row.id, topic: row.topic, sqlstate: err.code, constraint: err.constraint, until, error },
        'the database refused to mark a failed row; it and the later rows of its key are set aside, the other keys go on',
      );
      this.ctx.events.emit('error', { shard: this.shard, error: err });
      return;
    }
    this.deps.setAside.delete(row.id);
    const state = rows[0]?.state ?? 'unknown';
    this.log.warn({ id: row.id, topic: row.topic, key: row.key, attempts: rows[0]?.attempts, state, error }, 'row failed');
    this.ctx.events.emit('rowFailed', { shard: this.shard, id: row.id, error, dead: state === 'dead' });
  }
}
