import type { TopicPartition } from '@confluentinc/kafka-javascript';
import type pg from 'pg';
import { createPool } from '../db/pool.js';
import { OutboxError } from '../errors.js';
import { KafkaAdmin } from '../kafka/admin.js';
import type { KafkaConnection } from '../kafka/config.js';
import { createLogger, type Logger } from '../log.js';
import { applyRecords, isInfrastructureError, type ApplyContext, type BatchOutcome } from './apply.js';
import { ConsumerEmitter, type ConsumerEventName, type ConsumerEvents } from './events.js';
import { GroupClient, OFFSET_BEGINNING, REBALANCE_ASSIGN } from './kafka-client.js';
import { resolveConsumerOptions, type ConsumerOptions, type ResolvedConsumerOptions } from './options.js';
import { toConsumedRecord, type ConsumedRecord } from './record.js';
import { replayDeadLetters, type ReplayFilter, type ReplayResult } from './replay.js';
import { readOffsetSql } from './sql/readOffset.js';
import { loadOffsetsSql } from './sql/loadOffsets.js';
import { sampleLag, StallDetector } from './watchdog.js';

interface PartitionState {
  topic: string;
  partition: number;
  /** Next offset this consumer expects to apply: the stored one as last read or written. `undefined`: none stored yet. */
  expected: number | undefined;
  /** A seek that has not succeeded yet; records of the partition are dropped until it does. */
  seekTo: number | undefined;
  blocked: { offset: number; error: string } | undefined;
  logger: Logger;
}

const key = (topic: string, partition: number): string => `${topic}:${partition}`;

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    function done(): void {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });
}

/**
 * A Kafka consumer group member whose handler's effects and offsets commit together in
 * PostgreSQL (see docs/consumer.md). Create it with {@link createConsumer}.
 */
export class Consumer {
  private readonly options: ResolvedConsumerOptions;
  private readonly events: ConsumerEmitter;
  private readonly logger: Logger;
  private readonly connection: KafkaConnection;
  private pool: pg.Pool | undefined;
  private client: GroupClient | undefined;
  private admin: KafkaAdmin | undefined;
  private readonly partitions = new Map<string, PartitionState>();
  private rebalances: { client: GroupClient; code: number; partitions: TopicPartition[] }[] = [];
  private pending: ConsumedRecord[] = [];
  private unblockRequests: string[] = [];
  private abort = new AbortController();
  private closing = false;
  private startPromise: Promise<void> | undefined;
  private stopPromise: Promise<void> | undefined;
  private loopPromise: Promise<void> | undefined;
  private watchdogTimer: NodeJS.Timeout | undefined;
  private detector: StallDetector;
  private rebuildReason: string | undefined;
  private lastOffsetCheck = 0;

  constructor(input: ConsumerOptions) {
    this.options = resolveConsumerOptions(input);
    this.logger = (this.options.logger ?? createLogger()).child({ component: 'consumer', groupId: this.options.groupId });
    this.events = new ConsumerEmitter(() => this.logger);
    this.connection = { brokers: this.options.brokers, clientId: this.options.clientId, properties: this.options.kafkaProperties };
    this.detector = new StallDetector(this.options.stallTimeoutMs);
  }

  /** Subscribes to a typed event; returns the unsubscribe function. */
  on<E extends ConsumerEventName>(event: E, listener: (payload: ConsumerEvents[E]) => void): () => void {
    return this.events.on(event, listener);
  }

  /** Joins the group and starts consuming. Idempotent; resolves once connected and subscribed. */
  start(): Promise<void> {
    if (this.stopPromise) return Promise.reject(new OutboxError('STOPPED', 'consumer was stopped; create a new one'));
    this.startPromise ??= this.doStart();
    return this.startPromise;
  }

  private async doStart(): Promise<void> {
    this.pool = this.options.pool ?? createPool(this.options.databaseUrl!, this.logger, { application_name: 'outbox-relay-consumer' });
    const { rows } = await this.pool.query<{ table: string | null }>(`select to_regclass($1::text) as table`, [`${this.options.q}.consumer_offsets`]);
    if (!rows[0]?.table) {
      throw new OutboxError('NOT_FOUND', `table ${this.options.schema}.consumer_offsets does not exist: run \`outbox-relay migrate\` first`);
    }
    this.admin = new KafkaAdmin(this.connection);
    this.client = await this.createClient();
    this.loopPromise = this.loop();
    if (this.options.stallTimeoutMs > 0) {
      this.watchdogTimer = setInterval(() => void this.watch(), this.options.watchdogIntervalMs);
      this.watchdogTimer.unref();
    }
    this.logger.info({ topics: this.options.topics }, 'consumer started');
  }

  /**
   * Finishes the batch in progress (its transaction commits or rolls back), leaves the
   * group and closes. Retry backoff is cut short: a record still being retried is left,
   * unapplied, to the next owner. Idempotent.
   */
  stop(): Promise<void> {
    this.stopPromise ??= this.doStop();
    return this.stopPromise;
  }

  private async doStop(): Promise<void> {
    await this.startPromise?.catch(() => undefined);
    this.closing = true;
    this.abort.abort(new OutboxError('STOPPED', 'consumer stopping'));
    if (this.watchdogTimer) clearInterval(this.watchdogTimer);
    await this.loopPromise;
    await this.client?.disconnect();
    this.admin?.close();
    if (!this.options.pool) await this.pool?.end();
    this.logger.info('consumer stopped');
  }

  /** Partitions this member owns now. */
  assignment(): { topic: string; partition: number; nextOffset: number | undefined; blocked: boolean }[] {
    return [...this.partitions.values()].map((s) => ({ topic: s.topic, partition: s.partition, nextOffset: s.expected, blocked: s.blocked !== undefined }));
  }

  /** Resumes a partition stopped by the `block` policy: its failed record is tried again. */
  unblock(topic: string, partition: number): void {
    this.unblockRequests.push(key(topic, partition));
  }

  /** Replays this group's dead letters through the handler, each in its own transaction. */
  replayDeadLetters(filter: ReplayFilter = {}): Promise<ReplayResult[]> {
    if (!this.pool) throw new OutboxError('STOPPED', 'start the consumer before replaying dead letters');
    return replayDeadLetters(
      { pool: this.pool, groupId: this.options.groupId, handler: this.options.handler, schema: this.options.schema, inbox: this.options.inbox, logger: this.logger },
      filter,
    );
  }

  private async createClient(): Promise<GroupClient> {
    const o = this.options;
    const client: GroupClient = new GroupClient({
      connection: this.connection,
      groupId: o.groupId,
      fromBeginning: o.fromBeginning,
      sessionTimeoutMs: o.sessionTimeoutMs,
      heartbeatIntervalMs: o.heartbeatIntervalMs,
      maxPollIntervalMs: o.maxPollIntervalMs,
      pollTimeoutMs: o.pollTimeoutMs,
      properties: o.kafkaProperties,
      onRebalance: (code, partitions) => this.onRebalance(client, code, partitions),
      onCommitError: (err) => this.logger.debug({ err }, 'kafka offset commit failed (informational only)'),
    });
    await client.connect();
    client.subscribe(o.topics);
    return client;
  }

  /**
   * Rebalance events are queued and served by the loop between batches, so a batch in
   * progress always finishes (or fails) before its partitions are given up, and offsets
   * are read from PostgreSQL before `assign`. While closing, or for a client the watchdog
   * replaced, revocation is served at once.
   */
  private onRebalance(client: GroupClient, code: number, partitions: TopicPartition[]): void {
    if (this.closing || client !== this.client) {
      try {
        client.unassign();
      } catch {
        // Closed already.
      }
      return;
    }
    this.rebalances.push({ client, code, partitions });
  }

  private async serveRebalances(): Promise<void> {
    while (this.rebalances.length > 0) {
      const event = this.rebalances[0]!;
      // Records fetched before the rebalance are not retried under the new assignment.
      this.pending = [];
      if (event.client !== this.client) {
        this.rebalances.shift();
        continue;
      }
      if (event.code === REBALANCE_ASSIGN) await this.assign(event.client, event.partitions);
      else {
        event.client.unassign();
        const revoked = [...this.partitions.values()].map((s) => ({ topic: s.topic, partition: s.partition }));
        this.partitions.clear();
        if (event.code !== REBALANCE_ASSIGN && revoked.length > 0) this.logger.info({ partitions: revoked }, 'partitions revoked');
        this.events.emit('revoked', { partitions: revoked });
      }
      this.rebalances.shift();
      this.detector.progress();
    }
  }

  /** Reads the stored offsets and assigns with them: nothing is fetched from anywhere else. */
  private async assign(client: GroupClient, partitions: TopicPartition[]): Promise<void> {
    let stored = await this.loadOffsets(partitions);
    const unstored = partitions.filter((p) => !stored.has(key(p.topic, p.partition)));
    if (!this.options.fromBeginning && unstored.length > 0) {
      // "Start at the end" is pinned now, in PostgreSQL: were it left to librdkafka, a
      // rebalance or rebuild before the first commit would start at a later end and skip
      // what arrived in between.
      await this.pinAtEnd(unstored);
      stored = await this.loadOffsets(partitions);
    }
    client.assign(partitions.map((p) => ({ topic: p.topic, partition: p.partition, offset: stored.get(key(p.topic, p.partition)) ?? OFFSET_BEGINNING })));
    // A partition paused by the block policy stays paused in librdkafka across a rebalance;
    // a fresh assignment starts unblocked.
    client.resume(partitions.map((p) => ({ topic: p.topic, partition: p.partition })));
    this.partitions.clear();
    for (const p of partitions) {
      const expected = stored.get(key(p.topic, p.partition));
      this.partitions.set(key(p.topic, p.partition), {
        topic: p.topic,
        partition: p.partition,
        expected,
        seekTo: undefined,
        blocked: undefined,
        logger: this.logger.child({ topic: p.topic, partition: p.partition }),
      });
    }
    const listed = partitions.map((p) => ({ topic: p.topic, partition: p.partition, offset: stored.get(key(p.topic, p.partition)) ?? null }));
    this.logger.info({ partitions: listed }, 'partitions assigned');
    this.events.emit('assigned', { partitions: listed });
  }

  private async pinAtEnd(partitions: TopicPartition[]): Promise<void> {
    for (const topic of new Set(partitions.map((p) => p.topic))) {
      const numbers = partitions.filter((p) => p.topic === topic).map((p) => p.partition);
      const ends = await this.admin!.endOffsets(topic, numbers, { committed: true });
      for (const partition of numbers) {
        await this.pool!.query(readOffsetSql(this.options.q), [this.options.groupId, topic, partition, ends.get(partition) ?? 0]);
      }
    }
  }

  private async loadOffsets(partitions: { topic: string; partition: number }[]): Promise<Map<string, number>> {
    const { rows } = await this.pool!.query<{ topic: string; partition: number; next_offset: string }>(loadOffsetsSql(this.options.q), [
      this.options.groupId,
      partitions.map((p) => p.topic),
      partitions.map((p) => p.partition),
    ]);
    return new Map(rows.map((r) => [key(r.topic, r.partition), Number(r.next_offset)]));
  }

  private async loop(): Promise<void> {
    let failures = 0;
    while (!this.closing) {
      try {
        if (this.rebuildReason !== undefined) await this.rebuild();
        await this.serveRebalances();
        await this.serveSeeksAndUnblocks();
        const records = this.pending.length > 0 ? this.pending.splice(0) : (await this.client!.consume(this.options.batchSize)).map(toConsumedRecord);
        // Stopping: what was just fetched is left, unapplied, to the next owner.
        if (this.closing) break;
        if (records.length > 0) this.detector.progress(new Set(records.map((r) => key(r.topic, r.partition))));
        await this.process(records);
        if (Date.now() - this.lastOffsetCheck >= this.options.offsetCheckIntervalMs) await this.checkStoredOffsets();
        failures = 0;
      } catch (err) {
        if (this.closing) break;
        failures++;
        const delay = Math.min(this.options.retryMaxDelayMs, this.options.retryMinDelayMs * 2 ** Math.min(failures, 10));
        this.logger.warn({ err, failures, retryInMs: delay }, 'consume loop error; retrying');
        await sleep(delay, this.abort.signal);
      }
    }
  }

  /** Applies one fetch: one transaction per partition, partitions in parallel. */
  private async process(records: ConsumedRecord[]): Promise<void> {
    const groups = new Map<string, ConsumedRecord[]>();
    for (const record of records) {
      const k = key(record.topic, record.partition);
      const state = this.partitions.get(k);
      if (!state || state.blocked || state.seekTo !== undefined) continue;
      if (state.expected !== undefined && record.offset < state.expected) continue;
      const list = groups.get(k) ?? [];
      list.push(record);
      groups.set(k, list);
    }
    const failures: unknown[] = [];
    await Promise.all(
      [...groups].map(async ([k, list]) => {
        const state = this.partitions.get(k)!;
        try {
          await this.settle(state, await applyRecords(this.applyContext(state), list, state.expected));
        } catch (err) {
          if (!this.closing) this.pending.push(...list);
          failures.push(err);
        }
      }),
    );
    if (failures.length > 0) throw failures[0];
  }

  private applyContext(state: PartitionState): ApplyContext {
    const o = this.options;
    return {
      pool: this.pool!,
      q: o.q,
      groupId: o.groupId,
      handler: o.handler,
      inbox: o.inbox,
      maxAttempts: o.maxAttempts,
      retryMinDelayMs: o.retryMinDelayMs,
      retryMaxDelayMs: o.retryMaxDelayMs,
      failurePolicy: o.failurePolicy,
      logger: state.logger,
      signal: this.abort.signal,
    };
  }

  private async settle(state: PartitionState, outcome: BatchOutcome): Promise<void> {
    const { topic, partition } = state;
    if (outcome.applied + outcome.deadLettered + outcome.skipped > 0 || outcome.kind === 'committed') this.detector.progress([key(topic, partition)]);
    if (outcome.kind === 'moved') {
      if (outcome.fenced) {
        state.logger.warn({ stored: outcome.stored }, 'batch fenced: another consumer advanced the offset; nothing applied');
        this.events.emit('fenced', { topic, partition, stored: outcome.stored });
      }
      await this.seek(state, outcome.stored, outcome.fenced ? 'fenced' : 'stored-offset-moved');
      return;
    }
    state.expected = outcome.next;
    if (outcome.kind === 'blocked') {
      state.blocked = { offset: outcome.offset, error: outcome.error };
      this.client!.pause([{ topic, partition }]);
      this.events.emit('blocked', { topic, partition, offset: outcome.offset, error: outcome.error });
    }
    if (this.options.commitToKafka) this.client!.commitAsync([{ topic, partition, offset: outcome.next }]);
    this.events.emit('batch', { topic, partition, next: outcome.next, applied: outcome.applied, skipped: outcome.skipped, deadLettered: outcome.deadLettered });
  }

  /** Moves the fetch position to `offset`; until that succeeds, records of the partition are dropped. */
  private async seek(state: PartitionState, offset: number, reason: ConsumerEvents['seek']['reason']): Promise<void> {
    state.expected = offset;
    state.seekTo = offset;
    this.pending = this.pending.filter((r) => r.topic !== state.topic || r.partition !== state.partition);
    try {
      await this.client!.seek(state.topic, state.partition, offset);
      state.seekTo = undefined;
      state.logger.info({ offset, reason }, 'position moved to the stored offset');
      this.events.emit('seek', { topic: state.topic, partition: state.partition, offset, reason });
    } catch (err) {
      state.logger.warn({ err, offset }, 'seek failed; retrying');
    }
  }

  private async serveSeeksAndUnblocks(): Promise<void> {
    for (const state of this.partitions.values()) {
      if (state.seekTo !== undefined) await this.seek(state, state.seekTo, 'stored-offset-moved');
    }
    for (const k of this.unblockRequests.splice(0)) {
      const state = this.partitions.get(k);
      if (!state?.blocked) continue;
      state.blocked = undefined;
      await this.seek(state, state.expected ?? 0, 'unblock');
      this.client!.resume([{ topic: state.topic, partition: state.partition }]);
    }
  }

  /**
   * Idle partitions see no batch transaction, so an offset set by an operator would go
   * unnoticed until new records arrive; this periodic read catches it. Batches re-check the
   * stored offset anyway: this only shortens the time to pick a change up.
   */
  private async checkStoredOffsets(): Promise<void> {
    this.lastOffsetCheck = Date.now();
    const states = [...this.partitions.values()].filter((s) => !s.blocked && s.seekTo === undefined);
    if (states.length === 0) return;
    const stored = await this.loadOffsets(states);
    for (const state of states) {
      const value = stored.get(key(state.topic, state.partition));
      if (value !== undefined && value !== state.expected) await this.seek(state, value, 'stored-offset-moved');
    }
  }

  /** Watchdog tick: compares positions with the partitions' last stable offsets. */
  private async watch(): Promise<void> {
    if (this.closing || !this.admin || !this.client || this.rebuildReason !== undefined) return;
    const states = [...this.partitions.values()].filter((s) => !s.blocked);
    try {
      const { positions, ends } = await sampleLag(this.admin, this.client, states);
      const reason = this.detector.check(positions, ends);
      if (reason !== undefined && !this.closing) {
        this.logger.warn({ reason }, 'consumer stalled; rebuilding the Kafka consumer');
        this.rebuildReason = reason;
      }
    } catch (err) {
      this.logger.debug({ err }, 'watchdog could not read end offsets');
    }
  }

  /** Replaces the Kafka consumer: leaves the group, joins again, offsets come from PostgreSQL as always. */
  private async rebuild(): Promise<void> {
    const reason = this.rebuildReason!;
    const old = this.client;
    this.client = undefined;
    this.partitions.clear();
    this.pending = [];
    this.rebalances = [];
    // The client being replaced may be the wedged one: do not wait for it forever.
    await Promise.race([old?.disconnect(), sleep(10_000, this.abort.signal)]);
    this.client = await this.createClient();
    this.rebuildReason = undefined;
    this.detector = new StallDetector(this.options.stallTimeoutMs);
    this.events.emit('rebuilt', { reason });
  }
}

/** Creates a {@link Consumer}; call `start()` to join the group. */
export function createConsumer(options: ConsumerOptions): Consumer {
  return new Consumer(options);
}
