import { collectDefaultMetrics, Counter, Gauge, Registry } from 'prom-client';

/** The consumer's Prometheus metrics. Labels are bounded: group, topic, reason — never ids, keys or errors. */
export interface ConsumerMetrics {
  registry: Registry;
  recordsApplied: Counter<'group' | 'topic'>;
  recordsSkipped: Counter<'group' | 'reason'>;
  deadLetters: Counter<'group' | 'topic'>;
  offsetOutOfRange: Counter<'group' | 'topic' | 'reason'>;
  batchesAborted: Counter<'group' | 'reason'>;
  inboxDeleted: Counter<'group'>;
  lag: Gauge<'group' | 'topic' | 'partition'>;
  /** Called at each scrape to set `lag`: one per running consumer on this registry. */
  lagUpdaters: Set<() => void>;
}

/** The lag updaters of each registry, so one gauge serves every consumer sharing it. */
const updaters = new WeakMap<Registry, Set<() => void>>();

/**
 * The metrics on `registry`, created on first use: several consumers (groups) may share one
 * registry, each counting under its own `group` label.
 */
export function consumerMetrics(registry: Registry = new Registry()): ConsumerMetrics {
  // The process's own metrics, once per registry (the application's may have them already).
  if (!registry.getSingleMetric('process_cpu_seconds_total')) collectDefaultMetrics({ register: registry });
  const lagUpdaters = updaters.get(registry) ?? new Set<() => void>();
  updaters.set(registry, lagUpdaters);
  const counter = <L extends string>(name: string, help: string, labelNames: L[]): Counter<L> =>
    (registry.getSingleMetric(name) as Counter<L> | undefined) ?? new Counter({ name, help, labelNames, registers: [registry] });
  return {
    registry,
    recordsApplied: counter('consumer_records_applied_total', 'Records whose handler effects committed with their offset', ['group', 'topic']),
    recordsSkipped: counter(
      'consumer_records_skipped_total',
      'Records not applied because they were already: reason below-offset (redelivered below the stored offset) or already-applied (the inbox knew the outbox id)',
      ['group', 'reason'],
    ),
    deadLetters: counter('consumer_dead_letters_total', 'Records dead-lettered after failing every attempt', ['group', 'topic']),
    offsetOutOfRange: counter(
      'consumer_offset_out_of_range_total',
      'Stored offsets found to belong to another incarnation of the partition log (topic recreated, log truncated or deleted)',
      ['group', 'topic', 'reason'],
    ),
    batchesAborted: counter('consumer_batches_aborted_total', 'Batch transactions aborted at the database, by reason: handler-timeout, connection-silent (the connection went silent under the handler), revoked (partition lost)', ['group', 'reason']),
    inboxDeleted: counter('consumer_inbox_deleted_total', 'Inbox rows deleted by inbox retention', ['group']),
    lag:
      (registry.getSingleMetric('consumer_lag_records') as Gauge<'group' | 'topic' | 'partition'> | undefined) ??
      new Gauge({
        name: 'consumer_lag_records',
        help: "Offsets between a partition's log end (as last fetched) and the next offset this consumer will apply",
        labelNames: ['group', 'topic', 'partition'],
        registers: [registry],
        // Computed when scraped, from what librdkafka last fetched: no broker round trip.
        collect: () => {
          for (const update of lagUpdaters) update();
        },
      }),
    lagUpdaters,
  };
}
