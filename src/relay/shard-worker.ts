import type pg from 'pg';
import { describeError } from '../errors.js';
import type { KafkaAdmin } from '../kafka/admin.js';
import { classifyKafkaError, isRecordTooLarge } from '../kafka/errors.js';
import { TransactionalProducer, type Delivered } from '../kafka/producer.js';
import type { Logger } from '../log.js';
import { BatchLifecycle } from './batch-state.js';
import { checkpointKey, encodeCheckpoint } from './checkpoint.js';
import { foreignCheckpointError, markCheckpointSent, reconcileShard } from './reconcile.js';
import type { RelayEventSink } from './events.js';
import { faultPoint } from './faults.js';
import type { ResolvedRelayOptions } from './options.js';
import { toRecord, tracedRecord } from './records.js';
import { cutBatch, type Item } from './batch-cut.js';
import { CLAIM_BEGIN_SQL, claimStatement, type ClaimedRow } from '../sql/outbox-claim.js';
import { holdsLeaseSql } from '../sql/shard-leases.js';
import { markFailedSql } from '../sql/outbox-marks.js';
import { isRowDatabaseError, SetAsideRows } from './set-aside.js';
import type { TopicCache } from './topics.js';
import type { Tracing } from '../tracing.js';
import type { RelayActivity } from './activity.js';
import type { RelayMetrics } from './metrics.js';
import { failureDelay, sleep } from '../async.js';
import type { Wakeup } from './wakeup.js';
import { reusableAfter } from '../db/errors.js';

/** How long a producer dropped after a refused record may take to flush: nothing of it is wanted. */
const DISCARD_TIMEOUT_MS = 200;

export interface ShardContext {
  options: ResolvedRelayOptions;
  pool: pg.Pool;
  admin: KafkaAdmin;
  topics: TopicCache;
  wakeup: Wakeup;
  checkpointPartitions: number;
  /** The relay group's instance id, stamped into and required of every checkpoint. */
  instanceId: string;
  /** This outbox's source id (`outbox_source.source_id`), sent as header `outbox-source`. */
  source: string;
  events: RelayEventSink;
  metrics: RelayMetrics;
  /** A span per Kafka transaction, its context written into the records' traceparent. */
  tracing: Tracing;
  /** The dashboard's history: records published by partition. */
  activity: RelayActivity;
  /** Lets held rows whose keys are no longer blocked go (see releaseHeldSql); one run at a time per relay. */
  releaseHeld: () => Promise<void>;
  /** Called when a worker finds its lease gone, so the relay stops counting the shard as held. */
  onLeaseLost: (shard: number, token: string) => void;
}

/** Milliseconds since `start` (a performance.now() reading), to a tenth. */
function msSince(start: number): number {
  return Math.round((performance.now() - start) * 10) / 10;
}

type TransactOutcome = { kind: 'committed' } | { kind: 'stopped' } | { kind: 'row-errors'; errors: Map<number, unknown> };

/**
 * Owns one shard while this relay holds its lease. The order of a take-over is the
 * exactly-once argument:
 *   1. initialise the shard's transactional producer: this fences any former owner and
 *      settles the transaction it left open (committed or aborted, never half);
 *   2. read the shard's checkpoints committed since the last one applied here, and mark
 *      their rows sent (a former owner may have committed to Kafka and died before
 *      marking);
 *   3. only then claim and publish.
 * Each batch is one Kafka transaction holding the records AND a checkpoint listing their
 * ids; rows are marked sent only after the commit. Batches run strictly one after the
 * other, so at most one committed transaction is ever unmarked. After any failure the
 * producer is discarded and the cycle starts again at 1.
 */
export class ShardWorker {
  private readonly controller = new AbortController();
  private readonly log: Logger;
  private readonly checkpointPartition: number;
  private readonly checkpointKey: string;
  private producer: TransactionalProducer | undefined;
  private loop: Promise<void> | undefined;
  private batchSeq = 0;
  /** How long the last claim took (ms): reported with the batch it fed. */
  private lastClaimMs = 0;
  /** The checkpoint topic's id when this shard last reconciled: the incarnation its cursor is in. */
  private checkpointTopicId: string | null = null;
  private readonly claimStatement: { name: string; text: string };
  /** Rows the database refused to mark, kept out of the claims for a while (see SetAsideRows). */
  private readonly setAside: SetAsideRows;

  constructor(
    private readonly ctx: ShardContext,
    readonly shard: number,
    readonly token: string,
  ) {
    this.log = ctx.options.logger.child({ relay: ctx.options.relayId, group: ctx.options.group, shard, token });
    this.checkpointPartition = shard % ctx.checkpointPartitions;
    this.checkpointKey = checkpointKey(ctx.options.group, shard);
    this.claimStatement = claimStatement(ctx.options.q);
    this.setAside = new SetAsideRows(ctx.options.rowBackoff);
  }

  start(): void {
    this.loop ??= this.run();
  }

  /** Finishes the batch in flight (or lets it fail), then closes the producer. */
  async stop(): Promise<void> {
    this.controller.abort();
    await this.loop;
  }

  private get signal(): AbortSignal {
    return this.controller.signal;
  }

  private async run(): Promise<void> {
    const { options } = this.ctx;
    let failures = 0;
    let emptyClaims = 0;
    while (!this.signal.aborted) {
      try {
        if (!this.producer) await this.takeOver();
        if (!this.producer) break;
        const { rows, held } = await this.claim();
        this.ctx.wakeup.claimed(rows.length);
        if (rows.length === 0) {
          // Rows just held behind a blocked key: look further at once.
          if (held === 0) {
            this.ctx.events.emit('idle', { shard: this.shard });
            await this.ctx.wakeup.wait(options.pollIntervalMs, this.signal, ++emptyClaims);
          }
          continue;
        }
        emptyClaims = 0;
        await this.publish(rows);
        failures = 0;
      } catch (err) {
        failures += 1;
        const delay = failureDelay(failures, options.failureBackoff);
        const kind = classifyKafkaError(err);
        this.log.warn({ err, kind, failures, retryInMs: delay }, 'shard cycle failed; rebuilding producer and reconciling');
        this.ctx.events.emit('error', { shard: this.shard, error: err });
        this.ctx.metrics.shardFailures.inc({ reason: kind });
        await this.discardProducer();
        await sleep(delay, this.signal);
      }
    }
    await this.discardProducer();
  }

  private async takeOver(): Promise<void> {
    const { options } = this.ctx;
    // Initialising the producer fences whoever holds the transactional.id. A relay that was
    // paused past its lease must not fence the new owner, so the lease is checked first.
    if (!(await this.stillHeld())) return;
    const producer = new TransactionalProducer({
      connection: options.connection,
      transactionalId: `${options.group}-${this.shard}`,
      preset: options.preset,
      transactionTimeoutMs: options.transactionTimeoutMs,
    });
    try {
      await producer.connect(options.transactionOperationTimeoutMs);
      await producer.init(options.transactionOperationTimeoutMs);
      // Checked again now that this producer is the newest of its id: a relay paused between
      // the first check and init may have slept through a take-over of the outbox by another
      // group, which fenced this id before this init; nothing fences it after, so this relay
      // must find out here, before it reconciles or claims anything.
      if (!(await this.stillHeld())) {
        await producer.disconnect();
        return;
      }
      await this.reconcile();
    } catch (err) {
      await producer.disconnect();
      throw err;
    }
    this.producer = producer;
    this.log.info('shard producer ready');
  }

  /** Whether this relay still holds the shard's lease, and its group still serves the outbox; if not, leaves the shard. */
  private async stillHeld(): Promise<boolean> {
    const { options, pool } = this.ctx;
    const lease = await pool.query(holdsLeaseSql(options.q), [options.group, this.shard, options.relayId, this.token]);
    if (lease.rowCount !== 0) return true;
    this.log.warn('lease no longer held (or the group no longer serves the outbox); leaving the shard to its new owner');
    this.controller.abort();
    this.ctx.onLeaseLost(this.shard, this.token);
    this.ctx.events.emit('shardReleased', { shard: this.shard, reason: 'lost' });
    return false;
  }

  /** Marks sent the rows of every checkpoint committed after the one last applied (see reconcileShard). */
  private async reconcile(): Promise<void> {
    const { options, pool, admin } = this.ctx;
    const result = await reconcileShard({
      pool,
      admin,
      connection: options.connection,
      q: options.q,
      group: options.group,
      shard: this.shard,
      checkpointTopic: options.checkpointTopic,
      partition: this.checkpointPartition,
      instanceId: this.ctx.instanceId,
      timeoutMs: options.transactionOperationTimeoutMs,
      log: this.log,
    });
    this.checkpointTopicId = result.topicId;
    this.ctx.metrics.reconciled.inc(result.checkpoints);
    if (result.foreign > 0) this.ctx.events.emit('error', { shard: this.shard, error: foreignCheckpointError() });
    this.ctx.events.emit('reconciled', { shard: this.shard, checkpoints: result.checkpoints, marked: result.marked });
  }

  /** Runs the claim (claimBatchSql) in a transaction of its own, under CLAIM_PLAN_SETTINGS. */
  private async claim(): Promise<{ rows: ClaimedRow[]; held: number }> {
    const started = performance.now();
    try {
      return await this.claimRows();
    } finally {
      this.lastClaimMs = msSince(started);
    }
  }

  private async claimRows(): Promise<{ rows: ClaimedRow[]; held: number }> {
    const { options, pool } = this.ctx;
    const client = await pool.connect();
    // A connection lost between the statements is an error of this claim, not of the process.
    let lost: Error | undefined;
    const onError = (err: Error) => (lost = err);
    client.on('error', onError);
    let rows: Array<ClaimedRow & { held: number }>;
    const setAside = this.setAside.excluded();
    try {
      await client.query(CLAIM_BEGIN_SQL);
      ({ rows } = await client.query<ClaimedRow & { held: number }>({
        ...this.claimStatement,
        values: [options.shards, this.shard, options.batchSize, options.batchSize, options.maxBatchBytes, setAside.ids, setAside.keys],
      }));
      await client.query('commit');
    } catch (err) {
      // A connection that dropped or went silent is not asked anything more.
      if (!lost && !reusableAfter(err)) lost = err as Error;
      if (!lost) await client.query('rollback').catch(() => undefined);
      throw lost ?? err;
    } finally {
      client.off('error', onError);
      client.release(lost);
    }
    const held = rows[0]?.held ?? 0;
    if (held > 0) this.log.debug({ held }, 'rows held back behind blocked keys');
    return { rows: rows.filter((r) => r.id !== null).map(({ held: _, ...r }) => ({ ...r, id: String(r.id) })), held };
  }

  /**
   * Publishes claimed rows. A due retry (a row that failed before) goes alone in a
   * transaction of its own, so a row the broker refuses again never takes a whole batch
   * down with it; the others go together, cut before `maxBatchBytes`.
   */
  private async publish(rows: ClaimedRow[]): Promise<void> {
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
      for (const item of items) this.setAside.delete(item.row.id);
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
    if (!this.producer) await this.takeOver();
    const producer = this.producer;
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
    const phases = { claimMs: this.lastClaimMs, beginMs: 0, produceMs: 0, checkpointMs: 0, commitMs: 0, markMs: 0 };
    this.lastClaimMs = 0;
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
        discarding ??= this.discardProducer(DISCARD_TIMEOUT_MS);
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
      checkpointTopicId: this.checkpointTopicId,
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
      const until = this.setAside.add(row);
      if (until === undefined) throw err;
      this.log.error(
        { err, id: row.id, topic: row.topic, sqlstate: err.code, constraint: err.constraint, until, error },
        'the database refused to mark a failed row; it and the later rows of its key are set aside, the other keys go on',
      );
      this.ctx.events.emit('error', { shard: this.shard, error: err });
      return;
    }
    this.setAside.delete(row.id);
    const state = rows[0]?.state ?? 'unknown';
    this.log.warn({ id: row.id, topic: row.topic, key: row.key, attempts: rows[0]?.attempts, state, error }, 'row failed');
    this.ctx.events.emit('rowFailed', { shard: this.shard, id: row.id, error, dead: state === 'dead' });
  }

  private async discardProducer(timeoutMs?: number): Promise<void> {
    const producer = this.producer;
    this.producer = undefined;
    if (producer) await producer.disconnect(timeoutMs).catch(() => undefined);
  }
}
