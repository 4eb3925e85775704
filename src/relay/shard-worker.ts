import { reusableAfter } from '../db/errors.js';
import { failureDelay, sleep } from '../async.js';
import { classifyKafkaError } from '../kafka/errors.js';
import { TransactionalProducer } from '../kafka/producer.js';
import type { Logger } from '../log.js';
import { CLAIM_BEGIN_SQL, claimStatement, type ClaimedRow } from '../sql/outbox-claim.js';
import { holdsLeaseSql } from '../sql/shard-leases.js';
import { msSince, ShardPublisher } from './publish.js';
import { foreignCheckpointError, reconcileShard } from './reconcile.js';
import { SetAsideRows } from './set-aside.js';
import type { ShardContext } from './shard-context.js';

/**
 * Owns one shard while this relay holds its lease. The order of a take-over is the
 * exactly-once argument:
 *   1. initialise the shard's transactional producer: this fences any former owner and
 *      settles the transaction it left open (committed or aborted, never half);
 *   2. read the shard's checkpoints committed since the last one applied here, and mark
 *      their rows sent (a former owner may have committed to Kafka and died before
 *      marking);
 *   3. only then claim and publish (publish.ts).
 * Each batch is one Kafka transaction holding the records AND a checkpoint listing their
 * ids; rows are marked sent only after the commit. Batches run strictly one after the
 * other, so at most one committed transaction is ever unmarked. After any failure the
 * producer is discarded and the cycle starts again at 1. This file is the shard's cycle:
 * take-over, reconcile, claim; the transactions are its {@link ShardPublisher}'s.
 */
export class ShardWorker {
  private readonly controller = new AbortController();
  private readonly log: Logger;
  private readonly checkpointPartition: number;
  private producer: TransactionalProducer | undefined;
  private loop: Promise<void> | undefined;
  private readonly publisher: ShardPublisher;
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
    this.claimStatement = claimStatement(ctx.options.q);
    this.setAside = new SetAsideRows(ctx.options.rowBackoff);
    this.publisher = new ShardPublisher({
      ctx,
      shard,
      log: this.log,
      signal: this.signal,
      setAside: this.setAside,
      producer: async () => {
        if (!this.producer) await this.takeOver();
        return this.producer;
      },
      discardProducer: (timeoutMs) => this.discardProducer(timeoutMs),
      checkpointTopicId: () => this.checkpointTopicId,
    });
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
        const { rows, held, claimMs } = await this.claim();
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
        await this.publisher.publish(rows, claimMs);
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

  /** Runs the claim (claimBatchSql) in a transaction of its own, under CLAIM_PLAN_SETTINGS; `claimMs` is how long it took. */
  private async claim(): Promise<{ rows: ClaimedRow[]; held: number; claimMs: number }> {
    const started = performance.now();
    const claimed = await this.claimRows();
    return { ...claimed, claimMs: msSince(started) };
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

  private async discardProducer(timeoutMs?: number): Promise<void> {
    const producer = this.producer;
    this.producer = undefined;
    if (producer) await producer.disconnect(timeoutMs).catch(() => undefined);
  }
}
