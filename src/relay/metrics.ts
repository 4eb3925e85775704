import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import type pg from 'pg';
import { OptionsError } from '../errors.js';
import { unsentByTopicSql } from '../sql/outbox-inspect.js';

/**
 * The relay's Prometheus metrics. Labels are bounded: topic, state, reason; never ids,
 * keys or errors. The outbox gauges are read from PostgreSQL when scraped.
 */
export interface RelayMetrics {
  registry: Registry;
  /** Takes the relay's metrics off the registry (on stop), so another relay may use it. */
  unregister(): void;
  published: Counter<'topic'>;
  batches: Counter;
  batchDuration: Histogram;
  commitToPublish: Histogram;
  aborts: Counter<'reason'>;
  shardFailures: Counter<'reason'>;
  reconciled: Counter;
  /** The outbox gauges summed over topics (read as a scrape would: at most every 5 s). */
  outboxTotals(): Promise<{ pending: number; failed: number; dead: number; oldestSeconds: number }>;
}

/** The unsent gauges are read from PostgreSQL at most this often. */
const READ_INTERVAL_MS = 5_000;

export function relayMetrics(options: {
  registry?: Registry;
  pool: () => pg.Pool | undefined;
  q: string;
  shardsOwned: () => number;
}): RelayMetrics {
  const registry = options.registry ?? new Registry();
  if (registry.getSingleMetric('relay_batches_total')) {
    throw new OptionsError('metricsRegistry already holds a relay\'s metrics: give each relay in a process a registry of its own');
  }
  const existing = <T>(name: string) => registry.getSingleMetric(name) as T | undefined;
  if (!existing('process_cpu_seconds_total')) collectDefaultMetrics({ register: registry });
  const registers = [registry];
  new Gauge({
    name: 'relay_shards_owned',
    help: 'Shards this relay holds the lease of',
    registers,
    collect() {
      this.set(options.shardsOwned());
    },
  });
  const unsent: Gauge<'topic' | 'state'> = new Gauge({
    name: 'outbox_unsent_rows',
    help: 'Outbox rows not yet sent, by topic and state (pending, failed, dead)',
    labelNames: ['topic', 'state'],
    registers,
    collect: () => read(),
  });
  const oldest: Gauge<'topic'> = new Gauge({
    name: 'outbox_oldest_unsent_age_seconds',
    help: 'Age of the oldest unsent outbox row, by topic',
    labelNames: ['topic'],
    registers,
    collect: () => read(),
  });
  // One query serves both gauges; a scrape while the database is down keeps the last values.
  let reading: Promise<void> | undefined;
  let readAt = 0;
  function read(): Promise<void> {
    const pool = options.pool();
    // Scrapes more often than every few seconds are served the last reading.
    if (!pool || Date.now() - readAt < READ_INTERVAL_MS) return reading ?? Promise.resolve();
    return (reading ??= (async () => {
      readAt = Date.now();
      try {
        const { rows } = await pool.query<{ topic: string; state: string; rows: number; oldest_seconds: number }>(unsentByTopicSql(options.q));
        unsent.reset();
        oldest.reset();
        const byTopic = new Map<string, number>();
        for (const r of rows) {
          unsent.set({ topic: r.topic, state: r.state }, r.rows);
          byTopic.set(r.topic, Math.max(byTopic.get(r.topic) ?? 0, r.oldest_seconds));
        }
        for (const [topic, age] of byTopic) oldest.set({ topic }, age);
      } catch {
        // left as they were
      } finally {
        reading = undefined;
      }
    })());
  }
  const names = [
    'relay_shards_owned',
    'outbox_unsent_rows',
    'outbox_oldest_unsent_age_seconds',
    'relay_published_records_total',
    'relay_batches_total',
    'relay_batch_duration_seconds',
    'relay_commit_to_publish_seconds',
    'relay_transaction_aborts_total',
    'relay_shard_failures_total',
    'relay_checkpoints_reconciled_total',
  ];
  return {
    registry,
    async outboxTotals() {
      const totals = { pending: 0, failed: 0, dead: 0, oldestSeconds: 0 };
      for (const v of (await unsent.get()).values) {
        const state = v.labels.state as 'pending' | 'failed' | 'dead';
        if (state in totals) totals[state] += v.value;
      }
      for (const v of (await oldest.get()).values) totals.oldestSeconds = Math.max(totals.oldestSeconds, v.value);
      return totals;
    },
    unregister: () => {
      for (const name of names) registry.removeSingleMetric(name);
    },
    published: new Counter({ name: 'relay_published_records_total', help: 'Records committed to Kafka, by topic', labelNames: ['topic'], registers }),
    batches: new Counter({ name: 'relay_batches_total', help: 'Kafka transactions committed', registers }),
    batchDuration: new Histogram({
      name: 'relay_batch_duration_seconds',
      help: 'One Kafka transaction: produce, commit, mark rows sent',
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers,
    }),
    commitToPublish: new Histogram({
      name: 'relay_commit_to_publish_seconds',
      help: "From a row's created_at (its writer's transaction) to the Kafka commit that carried it",
      buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300],
      registers,
    }),
    aborts: new Counter({ name: 'relay_transaction_aborts_total', help: 'Kafka transactions abandoned, by reason: row (a refused record), transient, fatal', labelNames: ['reason'], registers }),
    shardFailures: new Counter({
      name: 'relay_shard_failures_total',
      help: "Shard cycles that failed (database or broker errors, a transaction's among them): the producer is rebuilt and the shard reconciled, by reason: transient, fatal, row",
      labelNames: ['reason'],
      registers,
    }),
    reconciled: new Counter({ name: 'relay_checkpoints_reconciled_total', help: 'Checkpoints applied when a shard changes owner, or a relay group takes the outbox over: batches committed to Kafka and not marked sent', registers }),
  };
}
