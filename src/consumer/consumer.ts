import { createServer, type Server } from 'node:http';
import { inspect } from 'node:util';
import type pg from 'pg';
import type { Registry } from 'prom-client';
import { createPool } from '../db/pool.js';
import { OptionsError, OutboxError } from '../errors.js';
import { Lifecycle } from '../lifecycle.js';
import { KafkaAdmin } from '../kafka/admin.js';
import { TABLE_EXISTS_SQL } from '../sql/catalog.js';
import { loadTracing } from '../tracing.js';
import { createClient } from './assignment.js';
import type { ConsumerEventName, ConsumerEvents } from './events.js';
import { runLoop, watchAssignment } from './loop.js';
import { resolveConsumerOptions, type ConsumerOptions, type ResolvedConsumerOptions } from './options.js';
import { key, StoredPositions } from './positions.js';
import { replayDeadLetters, serveReplayRequests, type ReplayFilter, type ReplayResult, type ReplayTarget } from './replay.js';
import { runInboxRetention } from './retention.js';
import { createConsumerState, type ConsumerState } from './state.js';
import { watch } from './watchdog.js';

/**
 * A Kafka consumer group member whose handler's effects and offsets commit together in
 * PostgreSQL (see docs/consumer.md). Create it with {@link createConsumer}.
 *
 * This class is the lifecycle and the public surface; the jobs are in their own files and
 * share one {@link ConsumerState}: the group membership and assignment (assignment.ts), the
 * consume loop (loop.ts, settle.ts, a batch in apply.ts), the watchdog (watchdog.ts).
 */
export class Consumer {
  private readonly options: ResolvedConsumerOptions;
  private readonly s: ConsumerState;
  private readonly lifecycle = new Lifecycle('consumer', () => this.open(), () => this.close());
  private loopPromise: Promise<void> | undefined;
  private watchdogTimer: NodeJS.Timeout | undefined;
  private revocationTimer: NodeJS.Timeout | undefined;
  private retentionLoop: Promise<void> | undefined;
  private replayLoop: Promise<void> | undefined;
  private lagLabels: Array<Record<'group' | 'topic' | 'partition', string>> = [];
  private readonly servers: Server[] = [];
  /** The consumer's Prometheus metrics (see docs/consumer.md). */
  readonly metrics: Registry;

  constructor(input: ConsumerOptions) {
    this.options = resolveConsumerOptions(input);
    this.s = createConsumerState(this.options);
    this.metrics = this.s.counters.registry;
  }

  /** Subscribes to a typed event; returns the unsubscribe function. */
  on<E extends ConsumerEventName>(event: E, listener: (payload: ConsumerEvents[E]) => void): () => void {
    return this.s.events.on(event, listener);
  }

  /**
   * Joins the group and starts consuming. Idempotent; resolves once connected and
   * subscribed. A start that fails closes what it opened (as `stop()` does) and rejects;
   * `start()` again gives the same error. After `stop()`, `start()` rejects with STOPPED: a
   * consumer runs once, create a new one.
   */
  start(): Promise<void> {
    return this.lifecycle.start();
  }

  private async open(): Promise<void> {
    const o = this.options;
    const s = this.s;
    const pool = o.pool ?? createPool(o.databaseUrl!, s.logger, { application_name: 'outbox-relay-consumer', max: o.poolSize, query_timeout: o.queryTimeoutMs });
    s.pool = pool;
    // One connection stays free of batches: offset checks, retention, and aborting a stuck batch need it.
    const poolSize = (pool as unknown as { options?: { max?: number } }).options?.max ?? 10;
    if (poolSize < 2) throw new OptionsError(`the pool must have at least 2 connections (has ${poolSize})`);
    if (o.partitionConcurrency !== undefined && o.partitionConcurrency > poolSize - 1) {
      throw new OptionsError(`partitionConcurrency (${o.partitionConcurrency}) must be at most the pool size - 1 (${poolSize - 1})`);
    }
    s.concurrency = o.partitionConcurrency ?? poolSize - 1;
    s.tracing = await loadTracing();
    const { rows } = await pool.query<{ table: string | null }>(TABLE_EXISTS_SQL, [`${o.q}.consumer_offsets`]);
    if (!rows[0]?.table) {
      throw new OutboxError('NOT_FOUND', `table ${o.schema}.consumer_offsets does not exist: run \`outbox-relay migrate\` first`);
    }
    const admin = new KafkaAdmin(s.connection);
    s.admin = admin;
    s.watchAdmin = new KafkaAdmin(s.connection);
    s.positions = new StoredPositions({ pool, admin, q: o.q, groupId: o.groupId, policy: o.onOffsetOutOfRange, counters: s.counters, events: s.events });
    s.client = await createClient(s);
    this.loopPromise = runLoop(s);
    this.revocationTimer = setInterval(() => watchAssignment(s), 200);
    this.revocationTimer.unref();
    if (o.inboxRetention !== false) {
      this.retentionLoop = runInboxRetention(
        { pool, q: o.q, groupId: o.groupId, logger: s.logger, signal: s.abort.signal },
        o.inboxRetention,
        (deleted) => {
          if (deleted > 0) s.counters.inboxDeleted.inc({ group: o.groupId }, deleted);
          s.events.emit('inboxPurged', { deleted });
        },
      );
    }
    s.counters.lagUpdaters.add(this.updateLag);
    this.replayLoop = serveReplayRequests(this.replayContext(pool), s.abort.signal, (result) =>
      s.logger.info({ deadLetter: result.id, status: result.status }, 'requested dead-letter replay done'),
    );
    if (o.stallTimeoutMs > 0) {
      this.watchdogTimer = setInterval(() => void watch(s), o.watchdogIntervalMs);
      this.watchdogTimer.unref();
    }
    s.logger.info({ topics: o.topics }, 'consumer started');
  }

  /**
   * Finishes the batch in progress (its transaction commits or rolls back), leaves the
   * group and closes. Retry backoff is cut short: a record still being retried is left,
   * unapplied, to the next owner. Idempotent.
   */
  stop(): Promise<void> {
    return this.lifecycle.stop();
  }

  private async close(): Promise<void> {
    const s = this.s;
    // A failed start stops the consumer from there: what it opened is closed once it settled.
    await this.lifecycle.opened();
    s.closing = true;
    s.abort.abort(new OutboxError('STOPPED', 'consumer stopping'));
    if (this.watchdogTimer) clearInterval(this.watchdogTimer);
    await this.loopPromise;
    if (this.revocationTimer) clearInterval(this.revocationTimer);
    await this.retentionLoop;
    await this.replayLoop;
    s.counters.lagUpdaters.delete(this.updateLag);
    for (const labels of this.lagLabels.splice(0)) s.counters.lag.remove(labels);
    for (const server of this.servers.splice(0)) {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
    await s.client?.disconnect();
    s.admin?.close();
    s.watchAdmin?.close();
    if (!this.options.pool) await s.pool?.end();
    s.logger.info('consumer stopped');
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
    return [...this.s.partitions.values()].map((p) => ({ topic: p.topic, partition: p.partition, nextOffset: p.expected, blocked: p.blocked !== undefined }));
  }

  /** Sets consumer_lag_records for the partitions this member holds; run when the registry is scraped. */
  private readonly updateLag = (): void => {
    const { counters, client, partitions, pending } = this.s;
    for (const labels of this.lagLabels) counters.lag.remove(labels);
    this.lagLabels = [];
    const held = [...partitions.values()];
    const positions = client?.positions(held.map((p) => ({ topic: p.topic, partition: p.partition }))) ?? new Map<string, number>();
    for (const p of held) {
      const high = client?.highWatermark(p.topic, p.partition);
      if (high === undefined || p.expected === undefined) continue;
      // Fetched up to the end with nothing of it waiting here: caught up, though the log may
      // end with a transaction marker, which is an offset but never a record to apply.
      const position = positions.get(key(p.topic, p.partition));
      const waiting = pending.some((r) => r.topic === p.topic && r.partition === p.partition);
      const lag = position !== undefined && position >= high && !waiting ? 0 : Math.max(0, high - p.expected);
      const labels = { group: this.options.groupId, topic: p.topic, partition: String(p.partition) };
      counters.lag.set(labels, lag);
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
          return res.end(JSON.stringify({ status: 'ok', partitions: this.s.partitions.size }));
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
    this.s.unblockRequests.push(key(topic, partition));
  }

  /** Replays this group's dead letters through the handler, each in its own transaction. */
  replayDeadLetters(filter: ReplayFilter = {}): Promise<ReplayResult[]> {
    if (!this.s.pool) throw new OutboxError('STOPPED', 'start the consumer before replaying dead letters');
    return replayDeadLetters(this.replayContext(this.s.pool), filter);
  }

  private replayContext(pool: pg.Pool): ReplayTarget {
    const o = this.options;
    return { pool, groupId: o.groupId, handler: o.handler, tracing: this.s.tracing, schema: o.schema, inbox: o.inbox, handlerTimeoutMs: o.handlerTimeoutMs, logger: this.s.logger };
  }
}

/** Creates a {@link Consumer}; call `start()` to join the group. */
export function createConsumer(options: ConsumerOptions): Consumer {
  return new Consumer(options);
}
