import { inspect } from 'node:util';
import type pg from 'pg';
import type { Registry } from 'prom-client';
import { sleep } from '../async.js';
import { createPool } from '../db/pool.js';
import { SafeEmitter } from '../events.js';
import { Lifecycle } from '../lifecycle.js';
import { KafkaAdmin } from '../kafka/admin.js';
import type { Logger } from '../log.js';
import { releaseHeldSql } from '../sql/outbox-claim.js';
import { loadTracing } from '../tracing.js';
import { RelayActivity } from './activity.js';
import type { RelayEventMap, RelayEvents } from './events.js';
import { ShardLeases } from './leases.js';
import { relayMetrics, type RelayMetrics } from './metrics.js';
import { resolveRelayOptions, type RelayOptions, type ResolvedRelayOptions } from './options.js';
import { housekeep, housekeepingIntervalMs } from './housekeeping.js';
import type { ShardContext } from './shard-context.js';
import { notReadyBecause } from './readiness.js';
import { ShardWorker } from './shard-worker.js';
import { checkSchema, readSource, registerGroup } from './startup-database.js';
import { checkTargetTopics, ensureCheckpointTopic, probeTransactions } from './startup-kafka.js';
import { takeOverGroup } from './take-over.js';
import { TopicCache, type TopicReport } from './topics.js';
import { Wakeup } from './wakeup.js';

/**
 * The outbox relay: moves committed outbox rows to Kafka exactly once. Start as many as
 * you like with the same `group`; they share the shards between them.
 */
export class Relay {
  readonly options: ResolvedRelayOptions;
  readonly events: RelayEvents;
  private readonly log: Logger;
  private readonly controller = new AbortController();
  private readonly workers = new Map<number, ShardWorker>();
  private pool: pg.Pool | undefined;
  private admin: KafkaAdmin | undefined;
  private wakeup: Wakeup | undefined;
  private leases: ShardLeases | undefined;
  private context: ShardContext | undefined;
  private readonly lifecycle = new Lifecycle('relay', () => this.open(), () => this.close());
  private loops: Promise<void>[] = [];
  private releasing: Promise<void> | undefined;
  private readonly metricsOf: RelayMetrics;
  /** The newest migration this relay needs, as start() found it. */
  private latestMigration = 0;
  /** This relay's recent history, for the dashboard (see RelayActivity). */
  readonly activity = new RelayActivity();
  /** The group that took over from this relay's group, once this relay has stepped down. */
  retiredBy: string | null | undefined;
  /** What the start-up check found. */
  topicReport: TopicReport | undefined;

  constructor(options: RelayOptions) {
    this.options = resolveRelayOptions(options);
    this.log = this.options.logger.child({ relay: this.options.relayId, group: this.options.group });
    this.events = new SafeEmitter<RelayEventMap>(() => this.log, 'relay');
    this.metricsOf = relayMetrics({
      registry: this.options.metricsRegistry,
      pool: () => this.pool,
      q: this.options.q,
      shardsOwned: () => this.shards.length,
    });
  }

  /** The relay's pool once started (for status reads that belong with it). */
  get database(): pg.Pool | undefined {
    return this.pool;
  }

  /**
   * Whether the relay can do its work: started and not stopping, the schema migrated as far
   * as this relay needs, its group serves the outbox, its heartbeat in the group is live,
   * and the database and the brokers answer (each asked with a short timeout). A relay that
   * owns no shard is a standby of its group and ready.
   */
  async readiness(): Promise<{ ready: boolean; reason: string; shards: number[] }> {
    const reasons: string[] = [];
    if (!this.context) reasons.push('not started');
    if (this.controller.signal.aborted) reasons.push(this.retiredBy !== undefined ? `taken over by ${this.retiredBy}` : 'stopping');
    if (reasons.length === 0) reasons.push(...(await notReadyBecause(this.pool!, this.admin!, this.options, this.latestMigration)));
    return { ready: reasons.length === 0, reason: reasons.join('; ') || (this.shards.length > 0 ? 'publishing' : 'standby: no shard to own'), shards: this.shards };
  }

  /** Unsent rows by state and the oldest unsent age, as the gauges last read them. */
  outboxTotals(): ReturnType<RelayMetrics['outboxTotals']> {
    return this.metricsOf.outboxTotals();
  }

  /** The relay's Prometheus registry (the one given as `metricsRegistry`, or its own). */
  get metrics(): Registry {
    return this.metricsOf.registry;
  }

  /** Shards this relay currently owns. */
  get shards(): number[] {
    return this.leases?.shards ?? [];
  }

  /**
   * Checks the database and the brokers, then takes shards and starts publishing.
   * Idempotent. A start that fails closes what it opened (as `stop()` does) and rejects;
   * `start()` again gives the same error. After `stop()`, `start()` rejects with STOPPED: a
   * relay runs once, create a new one.
   */
  start(): Promise<void> {
    return this.lifecycle.start();
  }

  private async open(): Promise<void> {
    const o = this.options;
    this.pool =
      o.pool ??
      createPool(o.databaseUrl!, this.log, {
        max: o.shards + 4,
        application_name: applicationName(o.relayId),
        // The claim query's estimated cost can cross the JIT threshold while it runs in a
        // millisecond: compiling would cost far more than it saves. A statement stuck on a
        // lock must fail (and the shard recover) rather than hang while its lease renews.
        options: '-c jit=off -c statement_timeout=30000 -c lock_timeout=10000',
        // A connection that went silent (half-open: no error, no answer) fails its statement
        // instead of holding a shard worker, a lease renewal or the mark forever.
        query_timeout: o.queryTimeoutMs,
      });
    const startup = { options: o, log: this.log, signal: this.controller.signal };
    this.latestMigration = await checkSchema(startup, this.pool);
    const { instanceId, takeOverFrom } = await registerGroup(startup, this.pool);
    const source = await readSource(startup, this.pool);
    this.admin = new KafkaAdmin(o.connection);
    const checkpointPartitions = await ensureCheckpointTopic(startup, this.admin);
    await probeTransactions(startup);
    if (takeOverFrom !== undefined) {
      const onCheckpoints = (checkpoints: number) => this.metricsOf.reconciled.inc(checkpoints);
      const reconciled = await takeOverGroup({ pool: this.pool, admin: this.admin, options: o, log: this.log, signal: this.controller.signal, onCheckpoints }, takeOverFrom);
      if (reconciled !== undefined) this.events.emit('tookOver', { from: takeOverFrom, reconciled });
    }
    const topics = new TopicCache(this.admin);
    this.topicReport = await checkTargetTopics(startup, this.pool, topics);

    this.wakeup = new Wakeup(o.databaseUrl, this.pool, o.schema, this.log, applicationName(o.relayId), { group: o.group, relayId: o.relayId, pollIntervalMs: o.pollIntervalMs });
    await this.wakeup.start();
    this.leases = new ShardLeases(this.pool, o, this.log);
    await this.leases.init();
    this.context = {
      options: o,
      pool: this.pool,
      admin: this.admin,
      topics,
      wakeup: this.wakeup,
      checkpointPartitions,
      instanceId,
      source,
      events: this.events,
      releaseHeld: () => this.releaseHeld(),
      metrics: this.metricsOf,
      tracing: await loadTracing(),
      activity: this.activity,
      onLeaseLost: (shard, token) => {
        if (this.workers.get(shard)?.token === token) this.workers.delete(shard);
        this.leases?.forget(shard, token);
      },
    };
    await this.leaseTick();
    this.loops.push(this.every(Math.max(250, Math.floor(o.leaseMs / 3)), () => this.leaseTick(), 'lease tick failed'));
    this.loops.push(this.every(o.pollIntervalMs, () => this.releaseHeld(), 'releasing held rows failed'));
    const housekeeping = { pool: this.pool, options: o, log: this.log, events: this.events, signal: this.controller.signal };
    const ownsShardZero = () => this.leases?.shards.includes(0) === true;
    if (ownsShardZero()) await housekeep(housekeeping, { atStart: true });
    this.loops.push(
      this.every(housekeepingIntervalMs(o), async () => (ownsShardZero() ? housekeep(housekeeping) : undefined), 'housekeeping (partitions, retention) failed'),
    );
    this.log.info({ shards: o.shards, schema: o.schema, checkpointTopic: o.checkpointTopic }, 'relay started');
  }

  /**
   * Lets held rows go whose keys nothing blocks any more (a retry sent, a dead row repaired
   * or removed by an operator), and wakes the shards if any were. One run at a time.
   */
  private releaseHeld(): Promise<void> {
    this.releasing ??= (async () => {
      try {
        let total = 0;
        for (;;) {
          const { rows } = await this.pool!.query<{ released: number }>(releaseHeldSql(this.options.q), [RELEASE_BATCH]);
          const released = rows[0]?.released ?? 0;
          total += released;
          if (released > 0) this.wakeup?.wakeAll();
          if (released < RELEASE_BATCH || this.controller.signal.aborted) break;
          await sleep(20, this.controller.signal);
        }
        if (total > 0) this.log.info({ released: total }, 'held rows released: nothing earlier of their keys blocks them any more');
      } finally {
        this.releasing = undefined;
      }
    })();
    return this.releasing;
  }

  private async leaseTick(): Promise<void> {
    if (this.controller.signal.aborted || !this.leases || !this.context) return;
    const changes = await this.leases.tick();
    if (!changes.serving) {
      // Another group takes over (or took over) this outbox: stop publishing and leave, so
      // that it sees no live relay of this group and can fence and reconcile.
      this.log.warn({ successor: changes.successor }, 'relay group no longer serves this outbox: another group takes over; stopping');
      this.retiredBy = changes.successor;
      void this.stop().then(() => this.events.emit('retired', { successor: changes.successor }));
      return;
    }
    for (const shard of changes.lost) {
      const worker = this.workers.get(shard);
      this.workers.delete(shard);
      // Kafka has fenced it or will: stop it without waiting for the tick.
      void worker?.stop();
      this.events.emit('shardReleased', { shard, reason: 'lost' });
    }
    for (const shard of changes.surplus) {
      const worker = this.workers.get(shard);
      this.workers.delete(shard);
      // Handed back in the background: a worker may take a while to finish its batch, and
      // the tick must keep renewing the other leases meanwhile. The lease stays held (and
      // renewed) until the worker has stopped, so nobody else fences it mid-batch.
      void this.leases
        .handBack(shard, async () => worker?.stop())
        .then(() => {
          this.events.emit('shardReleased', { shard, reason: 'rebalance' });
          this.log.info({ shard }, 'shard handed back for rebalancing');
        })
        .catch((err: unknown) => this.log.warn({ err, shard }, 'could not hand back shard'));
    }
    for (const { shard, token } of changes.acquired) {
      if (this.controller.signal.aborted) break;
      const worker = new ShardWorker(this.context, shard, token);
      this.workers.set(shard, worker);
      worker.start();
      this.events.emit('shardAcquired', { shard, token });
      this.log.info({ shard, token }, 'shard acquired');
    }
  }

  private async every(intervalMs: number, task: () => Promise<void>, failure: string): Promise<void> {
    const signal = this.controller.signal;
    while (!signal.aborted) {
      await sleep(intervalMs, signal);
      if (signal.aborted) break;
      try {
        await task();
      } catch (err) {
        this.log.warn({ err }, failure);
      }
    }
  }

  /**
   * Stops: every shard finishes or abandons its current transaction, leases are released
   * so other relays take over at once, connections close. Idempotent.
   */
  stop(): Promise<void> {
    return this.lifecycle.stop();
  }

  private async close(): Promise<void> {
    this.controller.abort();
    await Promise.allSettled(this.loops);
    await Promise.allSettled([...this.workers.values()].map((w) => w.stop()));
    this.workers.clear();
    await this.leases?.leave().catch((err: unknown) => this.log.warn({ err }, 'could not release shard leases'));
    await this.wakeup?.stop();
    this.admin?.close();
    if (!this.options.pool) await this.pool?.end().catch(() => undefined);
    if (this.options.metricsRegistry) this.metricsOf.unregister();
    this.log.info('relay stopped');
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }

  /** What printing a relay shows: its identity and redacted options, never its pool or clients. */
  toJSON(): Record<string, unknown> {
    return { group: this.options.group, relayId: this.options.relayId, shards: this.shards, options: this.options };
  }

  [inspect.custom](): Record<string, unknown> {
    return { ...this.toJSON(), options: (this.options as unknown as { toJSON(): unknown }).toJSON() };
  }
}

/** Held rows let go per statement (see releaseHeldSql): short statements, short locks. */
const RELEASE_BATCH = 5_000;

/** The relay's connections are named after it in pg_stat_activity. */
function applicationName(relayId: string): string {
  return `outbox-relay ${relayId}`.slice(0, 63);
}

/** Creates a relay; call `start()` to run it. */
export function createRelay(options: RelayOptions): Relay {
  return new Relay(options);
}
