import type { TopicPartition } from '@confluentinc/kafka-javascript';
import type pg from 'pg';
import { SafeEmitter } from '../events.js';
import type { KafkaAdmin } from '../kafka/admin.js';
import type { KafkaConnection } from '../kafka/config.js';
import type { GroupClient } from '../kafka/group-client.js';
import { createLogger, type Logger } from '../log.js';
import { NOOP_TRACING, type Tracing } from '../tracing.js';
import type { ConsumerEmitter, ConsumerEvents } from './events.js';
import { consumerMetrics, type ConsumerMetrics } from './metrics.js';
import type { ResolvedConsumerOptions } from './options.js';
import type { PartitionState, StoredPositions } from './positions.js';
import type { ConsumedRecord } from './record.js';
import type { BatchConnection } from './transaction.js';
import { StallDetector } from './stall-detector.js';

/** A rebalance the group delivered, waiting for the loop to serve it between batches. */
export interface RebalanceEvent {
  client: GroupClient;
  code: number;
  partitions: TopicPartition[];
}

/**
 * What one consumer's jobs share: the assignment (assignment.ts), the consume loop
 * (loop.ts, settle.ts) and the watchdog (watchdog.ts) read and change it; the `Consumer`
 * (consumer.ts) creates it, opens its clients in `start()` and closes them in `stop()`.
 */
export interface ConsumerState {
  readonly options: ResolvedConsumerOptions;
  readonly logger: Logger;
  readonly events: ConsumerEmitter;
  readonly counters: ConsumerMetrics;
  readonly connection: KafkaConnection;
  /** Set by `start()`; the fields below it too. */
  pool: pg.Pool | undefined;
  client: GroupClient | undefined;
  admin: KafkaAdmin | undefined;
  /** The watchdog's own client: its samples never queue the loop's requests, nor the other way round. */
  watchAdmin: KafkaAdmin | undefined;
  /** Stored offsets and their topic incarnations. */
  positions: StoredPositions | undefined;
  /** Spans of handler calls (see Tracing). */
  tracing: Tracing;
  /** Batches at most at once: `partitionConcurrency`, or the pool size less one. */
  concurrency: number;
  /** The partitions this member owns, by `topic:partition`. */
  readonly partitions: Map<string, PartitionState>;
  rebalances: RebalanceEvent[];
  /** Records fetched and not applied yet (a batch cut short): they go first after the next poll. */
  pending: ConsumedRecord[];
  /** `topic:partition` keys an operator asked to unblock. */
  readonly unblockRequests: string[];
  /** Open batch transactions: aborted at the database when the assignment is lost. */
  readonly inFlight: Set<BatchConnection>;
  /** Attempts charged to records whose retries a poll interrupted (cleared with the assignment). */
  readonly attempts: Map<string, number>;
  readonly abort: AbortController;
  closing: boolean;
  detector: StallDetector;
  /** Set by the watchdog: the loop replaces the Kafka consumer before its next poll. */
  rebuildReason: string | undefined;
  /** A watchdog sample is in flight. */
  watching: boolean;
  lastOffsetCheck: number;
  /** When the last fetch returned: librdkafka's max.poll.interval.ms counts from there. */
  lastPollAt: number;
  /** What the consume loop is doing, since when: a stall is reported with it. */
  phase: { name: string; since: number };
  /** Which partition of a fetch goes first: rotated, so the same ones do not always lead. */
  rotation: number;
}

export function createConsumerState(options: ResolvedConsumerOptions): ConsumerState {
  const logger = (options.logger ?? createLogger()).child({ component: 'consumer', groupId: options.groupId });
  return {
    options,
    logger,
    events: new SafeEmitter<ConsumerEvents>(() => logger, 'consumer'),
    counters: consumerMetrics(options.metricsRegistry),
    connection: { brokers: options.brokers, clientId: options.clientId, properties: options.kafkaProperties },
    pool: undefined,
    client: undefined,
    admin: undefined,
    watchAdmin: undefined,
    positions: undefined,
    tracing: NOOP_TRACING,
    concurrency: 1,
    partitions: new Map(),
    rebalances: [],
    pending: [],
    unblockRequests: [],
    inFlight: new Set(),
    attempts: new Map(),
    abort: new AbortController(),
    closing: false,
    detector: new StallDetector(options.stallTimeoutMs),
    rebuildReason: undefined,
    watching: false,
    lastOffsetCheck: 0,
    lastPollAt: Date.now(),
    phase: { name: 'starting', since: Date.now() },
    rotation: 0,
  };
}

/** The consume loop enters a phase (reported with a stall). */
export function enter(s: ConsumerState, phase: string): void {
  s.phase = { name: phase, since: Date.now() };
}

/** Drops the records of a partition waiting to be applied (its position moves, or is in question). */
export function dropPending(s: ConsumerState, state: PartitionState): void {
  s.pending = s.pending.filter((r) => r.topic !== state.topic || r.partition !== state.partition);
}
