import type pg from 'pg';
import type { KafkaAdmin } from '../kafka/admin.js';
import type { Tracing } from '../tracing.js';
import type { RelayActivity } from './activity.js';
import type { RelayEventSink } from './events.js';
import type { RelayMetrics } from './metrics.js';
import type { ResolvedRelayOptions } from './options.js';
import type { TopicCache } from './topics.js';
import type { Wakeup } from './wakeup.js';

/** What the relay gives each of its shard workers (and their publishers). */
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
