import type pg from 'pg';
import { describeError, OutboxError } from '../errors.js';
import type { KafkaAdmin } from '../kafka/admin.js';
import { classifyKafkaError } from '../kafka/errors.js';
import { TransactionalProducer, type Delivered } from '../kafka/producer.js';
import type { Logger } from '../log.js';
import { BatchLifecycle } from './batch-state.js';
import { checkpointKey, encodeCheckpoint, readCheckpoints } from './checkpoint.js';
import type { RelayEventSink } from './events.js';
import { faultPoint } from './faults.js';
import type { ResolvedRelayOptions } from './options.js';
import { recordSize, toRecord } from './records.js';
import { claimBatchSql, type ClaimedRow } from './sql/claimBatch.js';
import { checkpointCursorSql, holdsLeaseSql } from './sql/leases.js';
import { markFailedSql } from './sql/markFailed.js';
import { markSentSql } from './sql/markSent.js';
import type { TopicCache } from './topics.js';
import { sleep, type Wakeup } from './wakeup.js';

/** librdkafka's default message.max.bytes; larger records are refused before producing. */
const MAX_RECORD_BYTES = 1_000_000;

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
  /** Called when a worker finds its lease gone, so the relay stops counting the shard as held. */
  onLeaseLost: (shard: number, token: string) => void;
}

interface Item {
  row: ClaimedRow;
  record: ReturnType<typeof toRecord>;
}

type TransactOutcome = { kind: 'committed' } | { kind: 'row-errors'; errors: Map<number, unknown> };

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

  constructor(
    private readonly ctx: ShardContext,
    readonly shard: number,
    readonly token: string,
  ) {
    this.log = ctx.options.logger.child({ relay: ctx.options.relayId, group: ctx.options.group, shard, token });
    this.checkpointPartition = shard % ctx.checkpointPartitions;
    this.checkpointKey = checkpointKey(ctx.options.group, shard);
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
    while (!this.signal.aborted) {
      try {
        if (!this.producer) await this.takeOver();
        if (!this.producer) break;
        const rows = await this.claim();
        if (rows.length === 0) {
          await this.ctx.wakeup.wait(options.pollIntervalMs, this.signal);
          continue;
        }
        await this.publish(rows);
        failures = 0;
      } catch (err) {
        failures += 1;
        const delay = Math.min(options.failureBackoff.maxMs, options.failureBackoff.minMs * 2 ** Math.min(failures - 1, 20));
        const kind = classifyKafkaError(err);
        this.log.warn({ err, kind, failures, retryInMs: delay }, 'shard cycle failed; rebuilding producer and reconciling');
        this.ctx.events.emit('error', { shard: this.shard, error: err });
        await this.discardProducer();
        await sleep(delay * (0.75 + Math.random() * 0.5), this.signal);
      }
    }
    await this.discardProducer();
  }

  private async takeOver(): Promise<void> {
    const { options, pool } = this.ctx;
    // Initialising the producer fences whoever holds the transactional.id. A relay that was
    // paused past its lease must not fence the new owner, so the lease is checked first.
    const lease = await pool.query(holdsLeaseSql(options.sqlSchema), [options.group, this.shard, options.relayId, this.token]);
    if (lease.rowCount === 0) {
      this.log.warn('lease no longer held; leaving the shard to its new owner');
      this.controller.abort();
      this.ctx.onLeaseLost(this.shard, this.token);
      this.ctx.events.emit('shardReleased', { shard: this.shard, reason: 'lost' });
      return;
    }
    const producer = new TransactionalProducer({
      connection: options.connection,
      transactionalId: `${options.group}-${this.shard}`,
      preset: options.preset,
      transactionTimeoutMs: options.transactionTimeoutMs,
    });
    try {
      await producer.connect(options.transactionOperationTimeoutMs);
      await producer.init(options.transactionOperationTimeoutMs);
      await this.reconcile();
    } catch (err) {
      await producer.disconnect();
      throw err;
    }
    this.producer = producer;
    this.log.info('shard producer ready');
  }

  /** Marks sent the rows of every checkpoint committed after the one last applied. */
  private async reconcile(): Promise<void> {
    const { options, pool, admin } = this.ctx;
    const { rows } = await pool.query<{ offset: string }>(checkpointCursorSql(options.sqlSchema), [options.group, this.shard]);
    const cursor = Number(rows[0]?.offset ?? -1);
    const ends = await admin.endOffsets(options.checkpointTopic, [this.checkpointPartition]);
    const end = ends.get(this.checkpointPartition) ?? 0;
    // A cursor past the end means the checkpoint topic was recreated: read all of it.
    const from = cursor + 1 > end ? 0 : cursor + 1;
    const found = await readCheckpoints(
      options.connection,
      options.checkpointTopic,
      this.checkpointPartition,
      this.checkpointKey,
      from,
      end,
      options.transactionOperationTimeoutMs,
    );
    let marked = 0;
    for (const { offset, checkpoint } of found) {
      if (checkpoint.instance !== this.ctx.instanceId) {
        // Same group name, another database: its ids are not ours. Marking them would lose rows.
        this.log.error(
          { offset, foreignInstance: checkpoint.instance, instance: this.ctx.instanceId },
          'checkpoint topic holds checkpoints of another outbox database using this relay group name; give each database its own group',
        );
        this.ctx.events.emit('error', { shard: this.shard, error: new OutboxError('INVALID_OPTIONS', 'relay group name shared by two databases') });
        continue;
      }
      marked += await this.markSent(checkpoint.ids, checkpoint.partitions, checkpoint.offsets, offset);
    }
    if (marked > 0) this.log.warn({ marked, checkpoints: found.length }, 'reconciled rows a previous owner committed to Kafka but did not mark');
    this.ctx.events.emit('reconciled', { shard: this.shard, checkpoints: found.length, marked });
  }

  private async claim(): Promise<ClaimedRow[]> {
    const { options, pool } = this.ctx;
    const { rows } = await pool.query<ClaimedRow>(claimBatchSql(options.sqlSchema), [options.shards, this.shard, options.batchSize]);
    return rows.map((r) => ({ ...r, id: String(r.id) }));
  }

  private async publish(rows: ClaimedRow[]): Promise<void> {
    const topics = await this.ctx.topics.lookup(rows.map((r) => r.topic));
    const blockedKeys = new Set<string>();
    const items: Item[] = [];
    let bytes = 0;
    for (const row of rows) {
      if (row.key !== null && blockedKeys.has(row.key)) continue;
      const record = toRecord(row, this.ctx.source, this.log);
      const topic = topics.get(row.topic);
      const size = recordSize(record);
      // One transaction carries at most maxBatchBytes; the rest (a prefix cut, so per-key
      // order holds) goes in the next batch.
      if (items.length > 0 && bytes + size > this.ctx.options.maxBatchBytes) break;
      const problem = !topic?.exists
        ? `unknown topic ${row.topic}: ${topic?.error ?? 'not found in broker metadata'}`
        : size > MAX_RECORD_BYTES
          ? `record of ${size} bytes exceeds the producer limit of ${MAX_RECORD_BYTES} bytes (message.max.bytes)`
          : undefined;
      if (problem !== undefined) {
        await this.markFailed(row, problem);
        if (row.key !== null) blockedKeys.add(row.key);
        continue;
      }
      items.push({ row, record });
      bytes += size;
    }
    if (items.length === 0) return;

    const outcome = await this.transact(items);
    if (outcome.kind === 'committed') return;

    // A record the broker refused doomed the whole transaction, which was aborted. Publish
    // the same rows one per transaction to find the bad ones; a key stops at its first bad row.
    this.log.warn({ refused: outcome.errors.size, rows: items.length }, 'broker refused records; isolating them row by row');
    const isolatedBlocked = new Set<string>();
    for (const item of items) {
      if (this.signal.aborted) return;
      if (item.row.key !== null && isolatedBlocked.has(item.row.key)) continue;
      const single = await this.transact([item]);
      if (single.kind === 'row-errors') {
        await this.markFailed(item.row, describeError(single.errors.get(0)));
        if (item.row.key !== null) isolatedBlocked.add(item.row.key);
      }
    }
  }

  /** One Kafka transaction: records + checkpoint, commit, then mark sent. */
  private async transact(items: Item[]): Promise<TransactOutcome> {
    const { options } = this.ctx;
    const producer = this.producer!;
    const batch = new BatchLifecycle();
    const seq = ++this.batchSeq;
    const started = Date.now();
    await producer.begin();
    batch.to('producing');
    const deliveries = items.map((item) => producer.produce(item.record));
    // A record refused for itself (too large, bad topic) dooms the transaction: librdkafka
    // stops sending, and the other records would only fail a delivery timeout later, looking
    // transient. So abort at the first such refusal; that purges the rest at once.
    const rowErrors = new Map<number, unknown>();
    let aborting: Promise<void> | undefined;
    deliveries.forEach((delivery, i) =>
      delivery.catch((err: unknown) => {
        if (classifyKafkaError(err) !== 'row') return;
        rowErrors.set(i, err);
        aborting ??= producer.abort(options.transactionOperationTimeoutMs);
      }),
    );
    const settled = await Promise.allSettled(deliveries);
    const failed = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
    if (failed) {
      batch.to('aborted');
      if (rowErrors.size === 0) throw failed.reason; // transient or fatal: the producer is rebuilt
      await aborting;
      return { kind: 'row-errors', errors: rowErrors };
    }
    const delivered = settled.map((s) => (s as PromiseFulfilledResult<Delivered>).value);
    const checkpoint = await producer.produce({
      topic: options.checkpointTopic,
      partition: this.checkpointPartition,
      key: this.checkpointKey,
      value: encodeCheckpoint({
        v: 1,
        instance: this.ctx.instanceId,
        group: options.group,
        shard: this.shard,
        relay: options.relayId,
        ids: items.map((i) => i.row.id),
        partitions: delivered.map((d) => d.partition),
        offsets: delivered.map((d) => d.offset),
      }),
      headers: [],
    });
    batch.to('committing');
    await faultPoint('before-kafka-commit', { shard: this.shard, rows: items.length });
    await producer.commit(options.transactionOperationTimeoutMs);
    batch.to('marking');
    await faultPoint('after-kafka-commit', { shard: this.shard, rows: items.length });
    await this.markSent(
      items.map((i) => i.row.id),
      delivered.map((d) => d.partition),
      delivered.map((d) => d.offset),
      checkpoint.offset,
    );
    batch.to('done');
    const durationMs = Date.now() - started;
    this.log.debug({ batch: seq, rows: items.length, durationMs }, 'batch published');
    this.ctx.events.emit('batch', { shard: this.shard, rows: items.length, durationMs });
    return { kind: 'committed' };
  }

  private async markSent(ids: string[], partitions: number[], offsets: number[], checkpointOffset: number): Promise<number> {
    const { options, pool } = this.ctx;
    const { rows } = await pool.query<{ marked: number }>(markSentSql(options.sqlSchema), [
      ids,
      partitions,
      offsets,
      options.group,
      this.shard,
      checkpointOffset,
      this.checkpointPartition,
    ]);
    return rows[0]?.marked ?? 0;
  }

  private async markFailed(row: ClaimedRow, error: string): Promise<void> {
    const { options, pool } = this.ctx;
    const { rows } = await pool.query<{ state: string; attempts: number }>(markFailedSql(options.sqlSchema), [
      row.id,
      error,
      options.maxAttempts,
      options.rowBackoff.minMs,
      options.rowBackoff.maxMs,
    ]);
    const state = rows[0]?.state ?? 'unknown';
    this.log.warn({ id: row.id, topic: row.topic, key: row.key, attempts: rows[0]?.attempts, state, error }, 'row failed');
    this.ctx.events.emit('rowFailed', { shard: this.shard, id: row.id, error, dead: state === 'dead' });
  }

  private async discardProducer(): Promise<void> {
    const producer = this.producer;
    this.producer = undefined;
    if (producer) await producer.disconnect().catch(() => undefined);
  }
}
