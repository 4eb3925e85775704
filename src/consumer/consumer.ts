import { createServer, type Server } from 'node:http';
import { inspect } from 'node:util';
import type { TopicPartition } from '@confluentinc/kafka-javascript';
import type pg from 'pg';
import type { Registry } from 'prom-client';
import { failureDelay, forEachLimit, sleep } from '../async.js';
import { createPool } from '../db/pool.js';
import { OptionsError, OutboxError } from '../errors.js';
import { KafkaAdmin } from '../kafka/admin.js';
import type { KafkaConnection } from '../kafka/config.js';
import { createLogger, type Logger } from '../log.js';
import { loadTracing, NOOP_TRACING, type Tracing } from '../tracing.js';
import { applyRecords, PartitionRevoked, PollDeadline, type ApplyContext, type BatchOutcome } from './apply.js';
import { SafeEmitter } from '../events.js';
import type { ConsumerEmitter, ConsumerEventName, ConsumerEvents } from './events.js';
import { GroupClient, OFFSET_BEGINNING, REBALANCE_ASSIGN } from '../kafka/group-client.js';
import { pollMarginMs, resolveConsumerOptions, type ConsumerOptions, type ResolvedConsumerOptions } from './options.js';
import { toConsumedRecord, type ConsumedRecord } from './record.js';
import { replayDeadLetters, serveReplayRequests, type ReplayFilter, type ReplayResult } from './replay.js';
import { readPartitionLogs } from './incarnation.js';
import { consumerMetrics, type ConsumerMetrics } from './metrics.js';
import { key, StoredPositions, type PartitionControl, type PartitionState } from './positions.js';
import { runInboxRetention } from './retention.js';
import type { BatchConnection } from './transaction.js';
import { TABLE_EXISTS_SQL } from '../sql/catalog.js';
import { sampleLag, StallDetector } from './watchdog.js';



/** SQLSTATE lock_not_available: a lock wait ran past `lockTimeoutMs`. */
const LOCK_NOT_AVAILABLE = '55P03';

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
  /** The watchdog's own client: its samples never queue the loop's requests, nor the other way round. */
  private watchAdmin: KafkaAdmin | undefined;
  private readonly partitions = new Map<string, PartitionState>();
  private rebalances: { client: GroupClient; code: number; partitions: TopicPartition[] }[] = [];
  private pending: ConsumedRecord[] = [];
  private unblockRequests: string[] = [];
  private abort = new AbortController();
  private closing = false;
  private startPromise: Promise<void> | undefined;
  /** doStart's own promise (see start()). */
  private starting: Promise<void> | undefined;
  private startFailed = false;
  private stopPromise: Promise<void> | undefined;
  private loopPromise: Promise<void> | undefined;
  private watchdogTimer: NodeJS.Timeout | undefined;
  private watching = false;
  private detector: StallDetector;
  private rebuildReason: string | undefined;
  private lastOffsetCheck = 0;
  /** When the last fetch returned: librdkafka's max.poll.interval.ms counts from there. */
  private lastPollAt = Date.now();
  /** What the consume loop is doing, since when: a stall is reported with it. */
  private phase: { name: string; since: number } = { name: 'starting', since: Date.now() };
  private readonly inFlight = new Set<BatchConnection>();
  /** Attempts charged to records whose retries a poll interrupted (cleared with the assignment). */
  private readonly attempts = new Map<string, number>();
  private revocationTimer: NodeJS.Timeout | undefined;
  private retentionLoop: Promise<void> | undefined;
  private replayLoop: Promise<void> | undefined;
  private lagLabels: Array<Record<'group' | 'topic' | 'partition', string>> = [];
  private readonly servers: Server[] = [];
  private concurrency = 1;
  private rotation = 0;
  /** The consumer's Prometheus metrics (see docs/consumer.md). */
  readonly metrics: Registry;
  private readonly counters: ConsumerMetrics;
  /** Stored offsets and their topic incarnations; set up by `start()`. */
  private positions!: StoredPositions;
  /** Spans of handler calls; loaded by `start()` (see Tracing). */
  private tracing: Tracing = NOOP_TRACING;

  constructor(input: ConsumerOptions) {
    this.options = resolveConsumerOptions(input);
    this.logger = (this.options.logger ?? createLogger()).child({ component: 'consumer', groupId: this.options.groupId });
    this.events = new SafeEmitter<ConsumerEvents>(() => this.logger, 'consumer');
    this.connection = { brokers: this.options.brokers, clientId: this.options.clientId, properties: this.options.kafkaProperties };
    this.detector = new StallDetector(this.options.stallTimeoutMs);
    this.counters = consumerMetrics(this.options.metricsRegistry);
    this.metrics = this.counters.registry;
  }

  /** Subscribes to a typed event; returns the unsubscribe function. */
  on<E extends ConsumerEventName>(event: E, listener: (payload: ConsumerEvents[E]) => void): () => void {
    return this.events.on(event, listener);
  }

  /**
   * Joins the group and starts consuming. Idempotent; resolves once connected and
   * subscribed. A start that fails closes what it opened (as `stop()` does) and rejects;
   * `start()` again gives the same error. After `stop()`, `start()` rejects with STOPPED: a
   * consumer runs once, create a new one.
   */
  start(): Promise<void> {
    if (this.stopPromise && !this.startFailed) return Promise.reject(new OutboxError('STOPPED', 'consumer was stopped; create a new one'));
    if (!this.startPromise) {
      this.starting = this.doStart();
      this.startPromise = this.starting.catch(async (err: unknown) => {
        this.startFailed = true;
        await this.stop();
        throw err;
      });
    }
    return this.startPromise;
  }

  private async doStart(): Promise<void> {
    const o = this.options;
    this.pool = o.pool ?? createPool(o.databaseUrl!, this.logger, { application_name: 'outbox-relay-consumer', max: o.poolSize, query_timeout: o.queryTimeoutMs });
    // One connection stays free of batches: offset checks, retention, and aborting a stuck batch need it.
    const poolSize = (this.pool as unknown as { options?: { max?: number } }).options?.max ?? 10;
    if (poolSize < 2) throw new OptionsError(`the pool must have at least 2 connections (has ${poolSize})`);
    if (o.partitionConcurrency !== undefined && o.partitionConcurrency > poolSize - 1) {
      throw new OptionsError(`partitionConcurrency (${o.partitionConcurrency}) must be at most the pool size - 1 (${poolSize - 1})`);
    }
    this.concurrency = o.partitionConcurrency ?? poolSize - 1;
    this.tracing = await loadTracing();
    const { rows } = await this.pool.query<{ table: string | null }>(TABLE_EXISTS_SQL, [`${this.options.q}.consumer_offsets`]);
    if (!rows[0]?.table) {
      throw new OutboxError('NOT_FOUND', `table ${this.options.schema}.consumer_offsets does not exist: run \`outbox-relay migrate\` first`);
    }
    this.admin = new KafkaAdmin(this.connection);
    this.watchAdmin = new KafkaAdmin(this.connection);
    this.positions = new StoredPositions({
      pool: this.pool,
      admin: this.admin,
      q: o.q,
      groupId: o.groupId,
      policy: o.onOffsetOutOfRange,
      counters: this.counters,
      events: this.events,
    });
    this.client = await this.createClient();
    this.loopPromise = this.loop();
    this.revocationTimer = setInterval(() => this.watchAssignment(), 200);
    this.revocationTimer.unref();
    if (o.inboxRetention !== false) {
      this.retentionLoop = runInboxRetention(
        { pool: this.pool, q: o.q, groupId: o.groupId, logger: this.logger, signal: this.abort.signal },
        o.inboxRetention,
        (deleted) => {
          if (deleted > 0) this.counters.inboxDeleted.inc({ group: o.groupId }, deleted);
          this.events.emit('inboxPurged', { deleted });
        },
      );
    }
    this.counters.lagUpdaters.add(this.updateLag);
    this.replayLoop = serveReplayRequests(
      { pool: this.pool, groupId: o.groupId, handler: o.handler, tracing: this.tracing, schema: o.schema, inbox: o.inbox, handlerTimeoutMs: o.handlerTimeoutMs, logger: this.logger },
      this.abort.signal,
      (result) => this.logger.info({ deadLetter: result.id, status: result.status }, 'requested dead-letter replay done'),
    );
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
    // The start itself, not start()'s promise: a failed start stops the consumer from there.
    await this.starting?.catch(() => undefined);
    this.closing = true;
    this.abort.abort(new OutboxError('STOPPED', 'consumer stopping'));
    if (this.watchdogTimer) clearInterval(this.watchdogTimer);
    await this.loopPromise;
    if (this.revocationTimer) clearInterval(this.revocationTimer);
    await this.retentionLoop;
    await this.replayLoop;
    this.counters.lagUpdaters.delete(this.updateLag);
    for (const labels of this.lagLabels.splice(0)) this.counters.lag.remove(labels);
    for (const server of this.servers.splice(0)) {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
    await this.client?.disconnect();
    this.admin?.close();
    this.watchAdmin?.close();
    if (!this.options.pool) await this.pool?.end();
    this.logger.info('consumer stopped');
  }

  /** What printing a consumer shows: its group, partitions and redacted options, never its pool or clients. */
  toJSON(): Record<string, unknown> {
    return { groupId: this.options.groupId, topics: this.options.topics, assignment: this.assignment(), options: this.options };
  }

  [inspect.custom](): Record<string, unknown> {
    return { ...this.toJSON(), options: (this.options as unknown as { toJSON(): unknown }).toJSON() };
  }

  /** Partitions this member owns now. */
  assignment(): { topic: string; partition: number; nextOffset: number | undefined; blocked: boolean }[] {
    return [...this.partitions.values()].map((s) => ({ topic: s.topic, partition: s.partition, nextOffset: s.expected, blocked: s.blocked !== undefined }));
  }

  /** Sets consumer_lag_records for the partitions this member holds; run when the registry is scraped. */
  private readonly updateLag = (): void => {
    const gauge = this.counters.lag;
    for (const labels of this.lagLabels) gauge.remove(labels);
    this.lagLabels = [];
    const held = [...this.partitions.values()];
    const positions = this.client?.positions(held.map((s) => ({ topic: s.topic, partition: s.partition }))) ?? new Map<string, number>();
    for (const s of held) {
      const high = this.client?.highWatermark(s.topic, s.partition);
      if (high === undefined || s.expected === undefined) continue;
      // Fetched up to the end with nothing of it waiting here: caught up, though the log may
      // end with a transaction marker, which is an offset but never a record to apply.
      const position = positions.get(`${s.topic}:${s.partition}`);
      const waiting = this.pending.some((r) => r.topic === s.topic && r.partition === s.partition);
      const lag = position !== undefined && position >= high && !waiting ? 0 : Math.max(0, high - s.expected);
      const labels = { group: this.options.groupId, topic: s.topic, partition: String(s.partition) };
      gauge.set(labels, lag);
      this.lagLabels.push(labels);
    }
  };

  /**
   * Serves the consumer's metrics (`GET /metrics`, Prometheus text) and `GET /healthz` on
   * `host:port` (default 127.0.0.1, port 9465). Or mount `consumer.metrics` in the
   * application's own server. The server closes with `stop()`.
   */
  async listen(options: { port?: number; host?: string } = {}): Promise<Server> {
    const server = createServer((req, res) => {
      void (async () => {
        const path = (req.url ?? '/').split('?')[0];
        if (path === '/metrics') {
          const text = await this.metrics.metrics();
          res.writeHead(200, { 'content-type': this.metrics.contentType });
          return res.end(text);
        }
        if (path === '/healthz') {
          res.writeHead(200, { 'content-type': 'application/json' });
          return res.end(JSON.stringify({ status: 'ok', partitions: this.partitions.size }));
        }
        res.writeHead(404, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ error: `no route ${path}` }));
      })().catch(() => {
        if (!res.headersSent) res.writeHead(500);
        res.end();
      });
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(options.port ?? 9465, options.host ?? '127.0.0.1', () => {
        server.off('error', reject);
        resolve();
      });
    });
    this.servers.push(server);
    return server;
  }

  /** Resumes a partition stopped by the `block` policy: its failed record is tried again. */
  unblock(topic: string, partition: number): void {
    this.unblockRequests.push(key(topic, partition));
  }

  /** Replays this group's dead letters through the handler, each in its own transaction. */
  replayDeadLetters(filter: ReplayFilter = {}): Promise<ReplayResult[]> {
    if (!this.pool) throw new OutboxError('STOPPED', 'start the consumer before replaying dead letters');
    return replayDeadLetters(
      {
        pool: this.pool,
        groupId: this.options.groupId,
        handler: this.options.handler,
        tracing: this.tracing,
        schema: this.options.schema,
        inbox: this.options.inbox,
        handlerTimeoutMs: this.options.handlerTimeoutMs,
        logger: this.logger,
      },
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

  /**
   * Reads the stored offsets, checks each against the partition's current log (see
   * {@link judgeStoredOffset}), and assigns with them: nothing is fetched from anywhere else.
   */
  private async assign(client: GroupClient, partitions: TopicPartition[]): Promise<void> {
    let stored = await this.positions.load(partitions);
    const unstored = partitions.filter((p) => !stored.has(key(p.topic, p.partition)));
    if (!this.options.fromBeginning && unstored.length > 0) {
      // "Start at the end" is pinned now, in PostgreSQL: were it left to librdkafka, a
      // rebalance or rebuild before the first commit would start at a later end and skip
      // what arrived in between.
      await this.positions.pinAtEnd(unstored);
      stored = await this.positions.load(partitions);
    }
    // Read after the offsets: a log's end read before them could lie behind them.
    const logs = await readPartitionLogs(this.admin!, partitions);
    const states = partitions.map((p): PartitionState => {
      const k = key(p.topic, p.partition);
      return {
        topic: p.topic,
        partition: p.partition,
        expected: stored.get(k)?.offset,
        seekTo: undefined,
        blocked: undefined,
        topicId: logs.get(k)?.topicId,
        logger: this.logger.child({ topic: p.topic, partition: p.partition }),
      };
    });
    for (const state of states) {
      const position = stored.get(key(state.topic, state.partition));
      const log = logs.get(key(state.topic, state.partition));
      if (position && log) await this.positions.check(state, position, log);
    }
    await this.positions.adoptTopicIds(states.filter((s) => !s.blocked && stored.get(key(s.topic, s.partition))?.topicId === null));
    client.assign(states.map((s) => ({ topic: s.topic, partition: s.partition, offset: s.expected ?? OFFSET_BEGINNING })));
    // A partition paused by the block policy stays paused in librdkafka across a rebalance;
    // a fresh assignment starts unblocked (unless its stored offset is stale and the policy blocks).
    client.resume(partitions.map((p) => ({ topic: p.topic, partition: p.partition })));
    const blocked = states.filter((s) => s.blocked);
    if (blocked.length > 0) client.pause(blocked.map((s) => ({ topic: s.topic, partition: s.partition })));
    this.partitions.clear();
    this.attempts.clear();
    for (const state of states) this.partitions.set(key(state.topic, state.partition), state);
    const listed = states.map((s) => ({ topic: s.topic, partition: s.partition, offset: s.expected ?? null }));
    this.logger.info({ partitions: listed }, 'partitions assigned');
    this.events.emit('assigned', { partitions: listed });
  }

  private async loop(): Promise<void> {
    let failures = 0;
    while (!this.closing) {
      try {
        this.enter('rebuild');
        if (this.rebuildReason !== undefined) await this.rebuild();
        this.enter('rebalance');
        await this.serveRebalances();
        this.enter('seek');
        await this.serveSeeksAndUnblocks();
        // Always poll, even with records left over: the poll keeps this member in the group
        // (max.poll.interval.ms) and serves rebalances. Left-overs come first, in order.
        // Records are waiting: do not wait for more. Unless the assignment is lost: then wait
        // for the rebalance to arrive instead of spinning.
        const waiting = this.pending.length > 0 && !this.assignmentLost();
        this.enter('poll');
        const fetched = await this.client!.consume(this.options.batchSize, waiting ? 0 : undefined);
        this.lastPollAt = Date.now();
        if (this.rebalances.length > 0) {
          // This poll delivered a rebalance: what it fetched, and what was left over, belongs
          // to the old assignment. The new one starts from the stored offsets.
          await this.serveRebalances();
          continue;
        }
        const records = [...this.pending.splice(0), ...fetched.map(toConsumedRecord)];
        // Stopping: what was just fetched is left, unapplied, to the next owner.
        if (this.closing) break;
        if (records.length > 0) this.detector.fetched(new Set(records.map((r) => key(r.topic, r.partition))));
        this.enter('apply');
        await this.process(records);
        this.enter('offset-check');
        if (Date.now() - this.lastOffsetCheck >= this.options.offsetCheckIntervalMs) await this.checkStoredOffsets();
        failures = 0;
      } catch (err) {
        if (this.closing) break;
        failures++;
        const delay = failureDelay(failures, { minMs: this.options.retryMinDelayMs, maxMs: this.options.retryMaxDelayMs });
        this.logger.warn({ err, failures, retryInMs: delay }, 'consume loop error; retrying');
        this.events.emit('error', { error: err, failures });
        this.enter('backoff');
        await sleep(delay, this.abort.signal);
      }
    }
  }

  /**
   * Applies one fetch: one transaction per partition, at most `partitionConcurrency` at a
   * time (each holds a pool connection; more would queue in the pool and time out).
   */
  private async process(records: ConsumedRecord[]): Promise<void> {
    const groups = new Map<string, ConsumedRecord[]>();
    const suspects = new Set<PartitionState>();
    for (const record of records) {
      const k = key(record.topic, record.partition);
      const state = this.partitions.get(k);
      if (!state || state.blocked || state.seekTo !== undefined) continue;
      if (state.expected !== undefined && record.offset < state.expected) {
        // librdkafka moved the position back by itself: it found its position out of range
        // (a recreated or truncated log). Never silently dropped: checked below.
        suspects.add(state);
        continue;
      }
      const list = groups.get(k) ?? [];
      list.push(record);
      groups.set(k, list);
    }
    const failures: unknown[] = [];
    const ids = groups.size === 0 ? undefined : this.topicIdsOf([...new Set([...groups.values()].map((list) => list[0]!.topic))]);
    // Rotated each fetch, so that above the cap the same partitions do not always go first.
    const ordered = [...groups];
    const first = ordered.length === 0 ? 0 : this.rotation++ % ordered.length;
    await forEachLimit([...ordered.slice(first), ...ordered.slice(0, first)], this.concurrency, async ([k, list]) => {
      const state = this.partitions.get(k)!;
      if (suspects.has(state)) return;
      const failed = (err: unknown): void => {
        if (err instanceof PollDeadline) return;
        if (err instanceof PartitionRevoked) {
          this.counters.batchesAborted.inc({ group: this.options.groupId, reason: 'revoked' });
          state.logger.warn({ err }, 'batch aborted: the partition was lost while it ran; nothing of it committed');
          this.events.emit('aborted', { topic: state.topic, partition: state.partition, reason: 'revoked' });
        } else if ((err as { code?: unknown } | null)?.code === LOCK_NOT_AVAILABLE) {
          // The former owner's batch still holds the offset row: try again after the next
          // poll, without backing off (the lock wait itself paces the retries).
          state.logger.debug('offset row still locked by a former owner; retrying');
        } else failures.push(err);
      };
      try {
        const outcome = await applyRecords(this.applyContext(state, ids), list, state.expected);
        await this.settle(state, outcome);
        if (outcome.kind === 'stale') {
          suspects.add(state);
          return;
        }
        if (outcome.kind !== 'committed') return;
        // Cut short (poll deadline, or a later part failed): the rest comes after the next poll.
        if (!this.closing) this.pending.push(...list.filter((r) => r.offset >= outcome.next));
        if (outcome.interrupted !== undefined) failed(outcome.interrupted);
      } catch (err) {
        if (!this.closing) this.pending.push(...list);
        failed(err);
      }
    });
    for (const state of suspects) await this.verifyPosition(state);
    if (failures.length > 0) throw failures[0];
  }

  /**
   * Topic ids of the fetch's topics, asked while its batches run. A failed lookup does not
   * hold batches up (the periodic check still runs): it answers "unknown".
   */
  private topicIdsOf(topics: string[]): Promise<Map<string, string> | undefined> {
    // Short: batches wait for the answer before they commit.
    return this.admin!.topicIds(topics, 2_000).catch((err: unknown) => {
      this.logger.debug({ err }, 'topic ids unavailable for this fetch');
      return undefined;
    });
  }

  private applyContext(state: PartitionState, ids?: Promise<Map<string, string> | undefined>): ApplyContext {
    const o = this.options;
    return {
      pool: this.pool!,
      q: o.q,
      groupId: o.groupId,
      handler: o.handler,
      batchHandler: o.batchHandler,
      tracing: this.tracing,
      inbox: o.inbox,
      maxAttempts: o.maxAttempts,
      retryMinDelayMs: o.retryMinDelayMs,
      retryMaxDelayMs: o.retryMaxDelayMs,
      failurePolicy: o.failurePolicy,
      handlerTimeoutMs: o.handlerTimeoutMs,
      lockTimeoutMs: o.lockTimeoutMs,
      topicId: state.topicId,
      sameLog: async () => {
        const current = (await ids)?.get(state.topic);
        return current === undefined || state.topicId === undefined || current === state.topicId;
      },
      pollDeadline: () => this.pollDeadline(),
      assignmentLost: () => this.assignmentLost(),
      inFlight: this.inFlight,
      attempts: this.attempts,
      onHandlerTimeout: (record) => {
        this.counters.batchesAborted.inc({ group: o.groupId, reason: 'handler-timeout' });
        state.logger.warn({ offset: record.offset, handlerTimeoutMs: o.handlerTimeoutMs }, 'handler overran its time; its transaction was aborted');
        this.events.emit('aborted', { topic: state.topic, partition: state.partition, reason: 'handler-timeout' });
      },
      logger: state.logger,
      signal: this.abort.signal,
    };
  }

  /**
   * When librdkafka's max.poll.interval.ms runs out, less a margin: past it the group gives
   * this member's partitions to others, so no batch of it may still be open then.
   */
  private pollDeadline(): number {
    const interval = this.options.maxPollIntervalMs;
    return this.lastPollAt + interval - pollMarginMs(interval);
  }

  /**
   * Every 200 ms while batches run: a member that lost its assignment (session timed out,
   * poll interval exceeded: librdkafka has left the group) aborts its open batch
   * transactions at the database at once, so it commits nothing after the new owner took
   * over and holds no lock the new owner needs.
   */
  private watchAssignment(): void {
    if (this.inFlight.size === 0 || !this.assignmentLost()) return;
    for (const connection of this.inFlight) void connection.abort('revoked');
  }

  /** librdkafka reports the assignment lost, or the poll interval ran out: the group has moved on. */
  private assignmentLost(): boolean {
    return (this.client?.assignmentLost() ?? false) || Date.now() > this.lastPollAt + this.options.maxPollIntervalMs;
  }


  private async settle(state: PartitionState, outcome: BatchOutcome): Promise<void> {
    const { topic, partition } = state;
    const group = this.options.groupId;
    if (outcome.applied > 0) this.counters.recordsApplied.inc({ group, topic }, outcome.applied);
    if (outcome.skipped > 0) this.counters.recordsSkipped.inc({ group, reason: 'duplicate' }, outcome.skipped);
    if (outcome.deadLettered > 0) this.counters.deadLetters.inc({ group, topic }, outcome.deadLettered);
    if (outcome.applied + outcome.deadLettered + outcome.skipped > 0 || outcome.kind === 'committed') this.detector.progress([key(topic, partition)]);
    if (outcome.kind === 'stale') return;
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
    // Attempts carried over belong to the records at the old position (a new log may hold others at those offsets).
    for (const id of this.attempts.keys()) if (id.startsWith(`${state.topic}:${state.partition}:`)) this.attempts.delete(id);
    state.expected = offset;
    state.seekTo = offset;
    this.pending = this.pending.filter((r) => r.topic !== state.topic || r.partition !== state.partition);
    try {
      await this.client!.seek(state.topic, state.partition, offset);
      state.seekTo = undefined;
      if (reason === 'offset-out-of-range') this.detector.replaced(key(state.topic, state.partition));
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
      if (state.blocked.stale) {
        await this.positions.release(state, this.control);
        continue;
      }
      state.blocked = undefined;
      await this.seek(state, state.expected ?? 0, 'unblock');
      this.client!.resume([{ topic: state.topic, partition: state.partition }]);
    }
  }

  /** Records below the expected offset arrived although no seek asked for them: see {@link StoredPositions.verify}. */
  private verifyPosition(state: PartitionState): Promise<void> {
    this.pending = this.pending.filter((r) => r.topic !== state.topic || r.partition !== state.partition);
    return this.positions.verify(state, this.control);
  }

  /** Operator changes to stored offsets, recreated topics, released blocks: see {@link StoredPositions.sweep}. */
  private async checkStoredOffsets(): Promise<void> {
    this.lastOffsetCheck = Date.now();
    // Between two polls: bounded well inside the poll interval, or a slow broker answer costs
    // the assignment. A check that times out is tried again at the next interval.
    const timeoutMs = Math.min(5_000, Math.max(1_000, Math.floor(this.options.maxPollIntervalMs / 4)));
    await this.positions.sweep([...this.partitions.values()], this.control, timeoutMs);
  }

  /** What {@link StoredPositions} may do to a partition's fetch. */
  private readonly control: PartitionControl = {
    seek: (state, offset, reason) => this.seek(state, offset, reason),
    pause: (state) => this.client!.pause([{ topic: state.topic, partition: state.partition }]),
    resume: (state) => this.client!.resume([{ topic: state.topic, partition: state.partition }]),
  };

  /** The consume loop enters a phase (reported with a stall). */
  private enter(phase: string): void {
    this.phase = { name: phase, since: Date.now() };
  }

  /** Watchdog tick: compares positions with the partitions' last stable offsets. */
  private async watch(): Promise<void> {
    // One sample at a time: ticks do not pile up behind a slow answer.
    if (this.closing || !this.watchAdmin || !this.client || this.rebuildReason !== undefined || this.watching) return;
    this.watching = true;
    try {
      await this.sampleAndJudge();
    } finally {
      this.watching = false;
    }
  }

  private async sampleAndJudge(): Promise<void> {
    if (!this.watchAdmin || !this.client) return;
    const states = [...this.partitions.values()].filter((s) => !s.blocked);
    try {
      const { positions, ends } = await sampleLag(this.watchAdmin, this.client, states);
      const stored = new Map(states.filter((s) => s.expected !== undefined).map((s) => [key(s.topic, s.partition), s.expected!] as const));
      const reason = this.detector.check(positions, ends, stored);
      if (reason !== undefined && !this.closing) {
        // Where the loop is: a rebuild is served by the loop, so one stuck elsewhere shows here.
        const loop = { phase: this.phase.name, forMs: Date.now() - this.phase.since };
        this.logger.warn({ reason, loop }, 'consumer stalled; rebuilding the Kafka consumer');
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
