import { inspect } from 'node:util';
import type pg from 'pg';
import { loadMigrations } from '../db/migrate.js';
import { missingPrivileges } from '../db/privileges.js';
import { createPool } from '../db/pool.js';
import { OptionsError, OutboxError } from '../errors.js';
import { KafkaAdmin } from '../kafka/admin.js';
import { isKafkaError, KAFKA_CODES } from '../kafka/errors.js';
import { TransactionalProducer } from '../kafka/producer.js';
import type { Logger } from '../log.js';
import { loadTracing } from '../tracing.js';
import { RelayActivity } from './activity.js';
import { SafeEmitter } from '../events.js';
import type { RelayEventMap, RelayEvents } from './events.js';
import { ShardLeases } from './leases.js';
import { activeGroupSql, readGroupSql, registerGroupSql } from '../sql/relay-groups.js';
import { activateIfNoneSql } from '../sql/relay-take-over.js';
import { takeOverGroup } from './take-over.js';
import type { Registry } from 'prom-client';
import { relayMetrics, type RelayMetrics } from './metrics.js';
import { unsentTopicsSql } from '../sql/outbox-inspect.js';
import { releaseHeldSql } from '../sql/outbox-claim.js';
import { CURRENT_ROLE_SQL, PING_SQL, schemaVersionSql } from '../sql/catalog.js';
import { readSourceSql } from '../sql/outbox-source.js';
import { resolveRelayOptions, type RelayOptions, type ResolvedRelayOptions } from './options.js';
import { purgeSentRows } from './retention.js';
import { isPartitioned, maintainPartitions } from './partitions.js';
import type { ShardContext } from './shard-context.js';
import { ShardWorker } from './shard-worker.js';
import { checkTopics, TopicCache, type TopicReport } from './topics.js';
import { sleep } from '../async.js';
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
  private starting: Promise<void> | undefined;
  private startFailed = false;
  private stopping: Promise<void> | undefined;
  private loops: Promise<void>[] = [];
  private releasing: Promise<void> | undefined;
  private readonly metricsOf: RelayMetrics;
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
   * Whether the relay can do its work: started and not stopping, its group serves the
   * outbox, and the database and the brokers answer (each asked with a short timeout). A
   * relay that owns no shard is a standby of its group and ready.
   */
  async readiness(): Promise<{ ready: boolean; reason: string; shards: number[] }> {
    const reasons: string[] = [];
    if (!this.context) reasons.push('not started');
    if (this.controller.signal.aborted) reasons.push(this.retiredBy !== undefined ? `taken over by ${this.retiredBy}` : 'stopping');
    const timeout = <T>(p: Promise<T>, what: string) =>
      Promise.race([p, new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`${what}: no answer in 2 s`)), 2_000).unref())]);
    if (reasons.length === 0) {
      await timeout(this.pool!.query(PING_SQL), 'database').catch((err: unknown) => reasons.push(`database: ${(err as Error).message}`));
      await timeout(this.admin!.listTopics(2_000), 'brokers').catch((err: unknown) => reasons.push(`brokers: ${(err as Error).message}`));
    }
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
    if (this.stopping && !this.startFailed) return Promise.reject(new OutboxError('STOPPED', 'relay was stopped; create a new one'));
    this.starting ??= this.doStart().catch(async (err: unknown) => {
      this.startFailed = true;
      await this.stop();
      throw err;
    });
    return this.starting;
  }

  private async doStart(): Promise<void> {
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
    await this.checkSchema(this.pool);
    const { instanceId, takeOverFrom } = await this.registerGroup(this.pool);
    const source = await this.readSource(this.pool);
    this.admin = new KafkaAdmin(o.connection);
    const checkpointPartitions = await this.ensureCheckpointTopic(this.admin);
    await this.probeTransactions();
    if (takeOverFrom !== undefined) {
      const reconciled = await takeOverGroup({ pool: this.pool, admin: this.admin, options: o, log: this.log, signal: this.controller.signal }, takeOverFrom);
      if (reconciled !== undefined) this.events.emit('tookOver', { from: takeOverFrom, reconciled });
    }
    const topics = new TopicCache(this.admin);
    this.topicReport = await this.checkTargetTopics(this.pool, topics);

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
    // Housekeeping, by one relay of the group (the owner of shard 0): a partitioned outbox's
    // partitions (looked up at every run, so an outbox partitioned while relays run is kept
    // too), then retention.
    const housekeeping = async () => {
      if (!this.leases?.shards.includes(0)) return;
      const partitioned = await isPartitioned(this.pool!, o.q);
      // A failed maintenance must not stop retention, nor the other way round.
      if (partitioned) {
        await maintainPartitions(this.pool!, o.q, o.retention === false ? null : o.retention.keepMs, this.log)
          .then((report) => this.events.emit('partitions', report))
          .catch((err: unknown) => this.log.warn({ err }, 'partition maintenance failed'));
      }
      if (o.retention !== false) await purgeSentRows(this.pool!, o.q, { ...o.retention, partitioned }, this.controller.signal, this.log);
    };
    if (this.leases.shards.includes(0) && (await isPartitioned(this.pool, o.q))) {
      await maintainPartitions(this.pool, o.q, null, this.log)
        .then((report) => this.events.emit('partitions', report))
        .catch((err: unknown) => this.log.warn({ err }, 'partition maintenance failed'));
    }
    this.loops.push(this.every(o.retention === false ? HOUSEKEEPING_MS : o.retention.intervalMs, housekeeping, 'housekeeping (partitions, retention) failed'));
    this.log.info({ shards: o.shards, schema: o.schema, checkpointTopic: o.checkpointTopic }, 'relay started');
  }

  /**
   * The schema is migrated, and the relay's role may do what the relay does there. The
   * relay makes no DDL: migrations are run by the schema's owner (outbox-relay migrate), and
   * a relay role needs only the grants of `outbox-relay roles`, checked here all at once so
   * that a missing one fails start() with its name instead of a shard later.
   */
  private async checkSchema(pool: pg.Pool): Promise<void> {
    const o = this.options;
    const latest = (await loadMigrations()).at(-1)?.id ?? 0;
    let current = 0;
    try {
      const { rows } = await pool.query<{ id: number | null }>(schemaVersionSql(o.q));
      current = rows[0]?.id ?? 0;
    } catch (cause) {
      const code = (cause as { code?: string }).code;
      if (code === '42501') {
        throw new OutboxError('PERMISSION_DENIED', `${await this.roleOf(pool)} may not read schema ${o.schema} (${(cause as Error).message}): ${grantHint(o.schema)}`, { cause });
      }
      if (code !== '42P01' && code !== '3F000') throw cause;
    }
    if (current < latest) {
      throw new OutboxError('MIGRATION_FAILED', `schema ${o.schema} is not migrated (at ${current}, need ${latest}): run outbox-relay migrate (as the schema's owner)`);
    }
    const missing = await missingPrivileges(pool, o.schema, 'relay', { retention: o.retention !== false, partitioned: await isPartitioned(pool, o.q) });
    const required = missing.filter((m) => m.need !== 'dashboard');
    if (required.length > 0) {
      throw new OutboxError(
        'PERMISSION_DENIED',
        `${await this.roleOf(pool)} lacks what the relay needs on schema ${o.schema}: ${required.map((m) => `${m.privilege} (${m.why})`).join('; ')}. ${grantHint(o.schema)}`,
      );
    }
    if (missing.length > 0) {
      this.log.warn({ missing: missing.map((m) => m.privilege) }, "the relay's role may not read what its dashboard and /api/status show: those reads will fail");
    }
  }

  private async roleOf(pool: pg.Pool): Promise<string> {
    const { rows } = await pool.query<{ role: string }>(CURRENT_ROLE_SQL);
    return `role ${rows[0]?.role ?? '?'}`;
  }

  /**
   * Registers the group (its shard count is fixed at its first start) and checks that it
   * may serve the outbox: it is the active group, or it is to take over from the active one
   * (`takeOverFrom`). Returns the group's instance id and the group to take over from.
   */
  private async registerGroup(pool: pg.Pool): Promise<{ instanceId: string; takeOverFrom: string | undefined }> {
    const o = this.options;
    for (let attempt = 1; ; attempt += 1) {
      try {
        await pool.query(registerGroupSql(o.q), [o.group, o.shards, o.checkpointTopic]);
        break;
      } catch (err) {
        // Another group became active between our check and insert: register inactive.
        if ((err as { code?: string }).code !== '23505' || attempt >= 3) throw err;
      }
    }
    const { rows } = await pool.query<{
      shards: number;
      instance_id: string;
      checkpoint_topic: string;
      active: boolean;
      successor: string | null;
      retired_at: Date | null;
    }>(readGroupSql(o.q), [o.group]);
    const group = rows[0];
    if (!group) throw new OutboxError('UNKNOWN', `relay group ${o.group} could not be registered`);
    if (group.shards !== o.shards) {
      throw new OptionsError(
        `relay group ${o.group} has ${group.shards} shards; this relay was given ${o.shards}. Keys would change shards while ` +
          `batches are in flight. Use shards=${group.shards}; for a new layout, start a new group that takes over from this one ` +
          `(outbox-relay relay --group NEW --shards ${o.shards} --take-over-from ${o.group}).`,
      );
    }
    if (group.checkpoint_topic !== o.checkpointTopic) {
      throw new OptionsError(`relay group ${o.group} keeps its checkpoints in ${group.checkpoint_topic}, not ${o.checkpointTopic}`);
    }
    const instanceId = group.instance_id;
    if (group.active && group.successor !== null) {
      throw new OutboxError(
        'GROUP_CONFLICT',
        `relay group ${o.group} is being taken over by ${group.successor}: start relays of ${group.successor} ` +
          `(with --take-over-from ${o.group}) to finish the take-over`,
      );
    }
    if (group.active) return { instanceId, takeOverFrom: undefined };
    if ((await pool.query(activateIfNoneSql(o.q), [o.group])).rowCount === 1) return { instanceId, takeOverFrom: undefined };
    const { rows: active } = await pool.query<{ relay_group: string }>(activeGroupSql(o.q));
    const serving = active[0]?.relay_group;
    if (group.retired_at !== null) {
      throw new OutboxError(
        'GROUP_CONFLICT',
        `relay group ${o.group} was taken over on ${group.retired_at.toISOString()}; outbox ${o.schema} is served by relay group ` +
          `${serving ?? '(none)'}: start relays of that group`,
      );
    }
    if (serving !== undefined && o.takeOverFrom === serving) return { instanceId, takeOverFrom: serving };
    throw new OutboxError(
      'GROUP_CONFLICT',
      `outbox ${o.schema} is served by relay group ${serving ?? '(none)'}; two groups would publish every row twice. ` +
        `To move it to relay group ${o.group} (a new layout), start ${o.group}'s relays with --take-over-from ${serving} ` +
        `(option takeOverFrom): they stop ${serving}'s relays, fence and reconcile them, then serve the outbox. ` +
        `Otherwise start relays of group ${serving}.`,
    );
  }

  /** This outbox's source id; read once, it is the same for every record of this relay. */
  private async readSource(pool: pg.Pool): Promise<string> {
    const o = this.options;
    const fix = `run outbox-relay migrate (migration 0005_outbox_source writes it)`;
    let rows: { source_id: string }[];
    try {
      ({ rows } = await pool.query<{ source_id: string }>(readSourceSql(o.q)));
    } catch (cause) {
      if ((cause as { code?: string }).code !== '42P01') throw cause;
      throw new OutboxError('MIGRATION_FAILED', `schema ${o.schema} has no outbox_source table: ${fix}`, { cause });
    }
    const source = rows[0]?.source_id;
    if (source === undefined) {
      throw new OutboxError(
        'MIGRATION_FAILED',
        `${o.schema}.outbox_source has no row, so records cannot carry this outbox's source id: ${fix}; ` +
          `if the schema is migrated and the row was deleted, insert one (insert into ${o.q}.outbox_source default values)`,
      );
    }
    return source;
  }

  /** Creates the compacted checkpoint topic if missing (RF 3, or 1 on a smaller cluster); returns its partition count. */
  private async ensureCheckpointTopic(admin: KafkaAdmin): Promise<number> {
    const o = this.options;
    await admin.listTopics(10_000).catch((cause: unknown) => {
      throw new OutboxError('KAFKA_ERROR', `Kafka brokers ${String(o.connection.brokers)} are not reachable`, { cause, retriable: true });
    });
    const create = (replication: number) =>
      admin.createTopic({
        topic: o.checkpointTopic,
        num_partitions: o.shards,
        replication_factor: replication,
        config: { 'cleanup.policy': 'compact', 'min.insync.replicas': String(Math.min(2, replication)), 'segment.ms': String(3_600_000) },
      });
    try {
      await create(o.checkpointReplicationFactor ?? 3);
    } catch (err) {
      const cause = (err as Error).cause;
      if (o.checkpointReplicationFactor !== undefined || !isKafkaError(cause) || cause.code !== KAFKA_CODES.ERRORS.ERR_INVALID_REPLICATION_FACTOR) throw err;
      if (o.strict) throw new OutboxError('TOPIC_UNSAFE', 'the cluster has fewer than 3 brokers: checkpoints cannot be replicated (strict mode)');
      this.log.warn({ topic: o.checkpointTopic }, 'fewer than 3 brokers: checkpoint topic created with replication factor 1');
      await create(1);
    }
    // A topic just created takes a moment to appear in metadata.
    const deadline = Date.now() + 30_000;
    for (;;) {
      const [description] = await admin.describeTopics([o.checkpointTopic]);
      if (description && !description.error) {
        await this.checkCheckpointTopic(admin, description.partitions.length);
        return description.partitions.length;
      }
      if (Date.now() > deadline) {
        throw new OutboxError('KAFKA_ERROR', `checkpoint topic ${o.checkpointTopic} is not usable: ${description?.error?.message ?? 'missing'}`);
      }
      await sleep(100, this.controller.signal);
    }
  }

  /**
   * The checkpoint topic is what lets a new owner of a shard find the batch a former owner
   * committed but did not mark: a checkpoint deleted before it was applied means that batch
   * is published again. So its settings are checked: one partition per shard at least (the
   * relay creates it so), and nothing deleted from it by time or size retention (a log that
   * no longer starts at 0: compaction keeps the start, retention moves it). The client
   * cannot read topic configs, so `cleanup.policy=compact` itself is what an operator must
   * keep; the relay creates the topic with it. Wrong settings fail start() in `strict`
   * mode and are logged as errors otherwise.
   */
  private async checkCheckpointTopic(admin: KafkaAdmin, partitions: number): Promise<void> {
    const o = this.options;
    const problems: string[] = [];
    if (partitions < o.shards) {
      problems.push(`it has ${partitions} partitions for ${o.shards} shards (create it with at least one partition per shard)`);
    }
    const starts = await this.retrying('read the checkpoint topic log start', () =>
      admin.startOffsets(o.checkpointTopic, Array.from({ length: partitions }, (_, p) => p)),
    );
    const trimmed = [...starts.entries()].filter(([, start]) => start > 0).map(([p]) => p);
    if (trimmed.length > 0) {
      problems.push(
        `records were deleted from partitions ${trimmed.join(', ')} (time or size retention, or delete-records): ` +
          'it must be cleanup.policy=compact with no retention.ms/retention.bytes, or a crash can publish a batch twice',
      );
    }
    if (problems.length === 0) return;
    const message = `checkpoint topic ${o.checkpointTopic}: ${problems.join('; ')}`;
    if (o.strict) throw new OutboxError('TOPIC_UNSAFE', `strict mode: ${message}`);
    this.log.error({ topic: o.checkpointTopic, problems }, 'checkpoint topic settings put exactly-once at risk');
  }

  /** Retries a broker call for a few seconds: a topic just created has no leaders for a moment. */
  private async retrying<T>(what: string, call: () => Promise<T>): Promise<T> {
    const deadline = Date.now() + 15_000;
    for (;;) {
      try {
        return await call();
      } catch (err) {
        if (Date.now() > deadline || this.controller.signal.aborted) throw err;
        this.log.debug({ err }, `${what}: retrying`);
        await sleep(200, this.controller.signal);
      }
    }
  }

  /**
   * Some producer settings are refused by the brokers only when a transactional producer
   * initialises: a `transactionTimeoutMs` above their `transaction.max.timeout.ms`, a
   * transactional id the principal may not use. Every shard would then fail forever after a
   * "successful" start, so one producer under the group's probe id is initialised first.
   */
  private async probeTransactions(): Promise<void> {
    const o = this.options;
    const producer = new TransactionalProducer({
      connection: o.connection,
      transactionalId: `${o.group}-probe`,
      preset: o.preset,
      transactionTimeoutMs: o.transactionTimeoutMs,
    });
    try {
      await producer.connect(o.transactionOperationTimeoutMs);
      await producer.init(o.transactionOperationTimeoutMs);
    } catch (err) {
      const code = (err as { cause?: { code?: unknown } }).cause?.code;
      if (code === KAFKA_CODES.ERRORS.ERR_INVALID_TRANSACTION_TIMEOUT) {
        throw new OptionsError(
          `transactionTimeoutMs (${o.transactionTimeoutMs}) is above the brokers' transaction.max.timeout.ms: lower it ` +
            '(the brokers default to 900000), or raise transaction.max.timeout.ms on the brokers',
        );
      }
      if (code === KAFKA_CODES.ERRORS.ERR_TRANSACTIONAL_ID_AUTHORIZATION_FAILED || code === KAFKA_CODES.ERRORS.ERR_CLUSTER_AUTHORIZATION_FAILED) {
        throw new OutboxError('KAFKA_ERROR', `the Kafka principal may not use transactional ids ${o.group}-*: grant it WRITE and DESCRIBE on them`, { cause: err });
      }
      throw err;
    } finally {
      await producer.disconnect().catch(() => undefined);
    }
  }

  private async checkTargetTopics(pool: pg.Pool, cache: TopicCache): Promise<TopicReport> {
    const { rows } = await pool.query<{ topic: string }>(unsentTopicsSql(this.options.q));
    const report = await checkTopics(cache, rows.map((r) => r.topic), this.log);
    if (this.options.strict && (report.missing.length > 0 || report.unsafe.length > 0)) {
      const problems = [...report.missing.map((t) => `${t}: missing`), ...report.unsafe.map((u) => `${u.topic}: ${u.problem}`)];
      throw new OutboxError('TOPIC_UNSAFE', `strict mode: ${problems.join('; ')}`);
    }
    return report;
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
    this.stopping ??= this.doStop();
    return this.stopping;
  }

  private async doStop(): Promise<void> {
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

/** How often housekeeping runs when retention is off (it then only makes a partitioned outbox's partitions ahead). */
const HOUSEKEEPING_MS = 10 * 60_000;

/** How a relay's role gets what it needs. */
function grantHint(schema: string): string {
  return `grant it the relay role: outbox-relay roles --schema ${schema} --apply (as the schema's owner), then GRANT ${schema}_relay TO the relay's login`;
}

/** The relay's connections are named after it in pg_stat_activity. */
function applicationName(relayId: string): string {
  return `outbox-relay ${relayId}`.slice(0, 63);
}

/** Creates a relay; call `start()` to run it. */
export function createRelay(options: RelayOptions): Relay {
  return new Relay(options);
}
