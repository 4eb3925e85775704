import type pg from 'pg';
import { DEFAULT_SCHEMA, quoteSchema } from '../db/identifiers.js';
import { OptionsError } from '../errors.js';
import type { KafkaProperties } from '../kafka/config.js';
import type { Logger } from '../log.js';
import type { ConsumedRecord } from './record.js';
import type { HandlerTx } from './transaction.js';

/** Applies one record. Every write through `tx` commits together with the new offset. */
export type RecordHandler = (record: ConsumedRecord, tx: HandlerTx) => Promise<void>;

/**
 * What happens to a record whose handler failed on every attempt.
 * - `dead-letter`: the record is written to `dead_letters` in the transaction that moves the
 *   offset past it; the partition moves on.
 * - `block`: the partition is paused at that record (its offset is not advanced); other
 *   partitions continue. {@link Consumer.unblock} retries it.
 */
export type FailurePolicy = 'dead-letter' | 'block';

export interface ConsumerOptions {
  /** PostgreSQL connection string. Give this or `pool`. */
  databaseUrl?: string;
  /** An existing pool (not ended by `stop()`). Give this or `databaseUrl`. */
  pool?: pg.Pool;
  /** Kafka bootstrap servers, `host:port` comma-separated or as an array. */
  brokers: string | readonly string[];
  /** Consumer group id; offsets, dead letters and the inbox are kept per group. */
  groupId: string;
  /** Topics to subscribe to. */
  topics: readonly string[];
  /** Applies one record inside the transaction that stores its offset. */
  handler: RecordHandler;
  /** Schema holding the consumer tables (run `migrate` first). Default `outbox`. */
  schema?: string;
  /** Most records per fetch; records of one partition in a fetch share one transaction. Default 100. */
  batchSize?: number;
  /** Attempts per record before the failure policy applies (the first try included). Default 5. */
  maxAttempts?: number;
  /** Backoff before the first retry, in ms; doubles per attempt. Default 200. */
  retryMinDelayMs?: number;
  /** Longest backoff between attempts, in ms. Default 5,000. */
  retryMaxDelayMs?: number;
  /** What to do with a record that failed every attempt. Default `dead-letter`. */
  failurePolicy?: FailurePolicy;
  /**
   * Skip records whose `outbox-id` header this group has already applied (a re-published
   * outbox row). Records without the header are never skipped by this. Default `true`.
   */
  inbox?: boolean;
  /** A partition with no stored offset starts at its earliest record (`true`) or its end (`false`). Default `true`. */
  fromBeginning?: boolean;
  /** pino logger; child loggers bind group, topic and partition. Default: {@link createLogger}. */
  logger?: Logger;
  /** client.id sent to Kafka. Default `outbox-relay-consumer`. */
  clientId?: string;
  /** Extra librdkafka consumer properties (TLS, SASL, fetch tuning). Managed ones are refused. */
  kafkaProperties?: KafkaProperties;
  /** session.timeout.ms: a member silent this long leaves the group. Default 30,000. */
  sessionTimeoutMs?: number;
  /** heartbeat.interval.ms. Default 3,000. */
  heartbeatIntervalMs?: number;
  /**
   * max.poll.interval.ms: a member that does not fetch for this long (e.g. a handler stuck
   * on a batch) is removed from the group; its late commit is then fenced. Default 300,000.
   */
  maxPollIntervalMs?: number;
  /** How long one fetch waits for the first record, in ms. Default 500. */
  pollTimeoutMs?: number;
  /**
   * How often idle partitions compare their position with the stored offset, so that an
   * offset changed by `outbox-relay offsets set/rewind` is picked up without new records.
   * Default 5,000 ms.
   */
  offsetCheckIntervalMs?: number;
  /** How often the liveness watchdog looks at lag and progress, in ms. Default 10,000. */
  watchdogIntervalMs?: number;
  /**
   * The watchdog rebuilds the Kafka consumer when a partition it owns has lag but made no
   * progress for this long. `0` turns the watchdog off. Default 120,000 ms.
   */
  stallTimeoutMs?: number;
  /** Commit offsets to Kafka too (after the PostgreSQL commit, asynchronously) so lag tools work. Default `true`. */
  commitToKafka?: boolean;
}

export interface ResolvedConsumerOptions {
  databaseUrl: string | undefined;
  pool: pg.Pool | undefined;
  brokers: string | readonly string[];
  groupId: string;
  topics: readonly string[];
  handler: RecordHandler;
  schema: string;
  /** The schema quoted for SQL. */
  q: string;
  batchSize: number;
  maxAttempts: number;
  retryMinDelayMs: number;
  retryMaxDelayMs: number;
  failurePolicy: FailurePolicy;
  inbox: boolean;
  fromBeginning: boolean;
  logger: Logger | undefined;
  clientId: string;
  kafkaProperties: KafkaProperties;
  sessionTimeoutMs: number;
  heartbeatIntervalMs: number;
  maxPollIntervalMs: number;
  pollTimeoutMs: number;
  offsetCheckIntervalMs: number;
  watchdogIntervalMs: number;
  stallTimeoutMs: number;
  commitToKafka: boolean;
}

export const CONSUMER_DEFAULTS = {
  schema: DEFAULT_SCHEMA,
  batchSize: 100,
  maxAttempts: 5,
  retryMinDelayMs: 200,
  retryMaxDelayMs: 5_000,
  failurePolicy: 'dead-letter',
  inbox: true,
  fromBeginning: true,
  clientId: 'outbox-relay-consumer',
  sessionTimeoutMs: 30_000,
  heartbeatIntervalMs: 3_000,
  maxPollIntervalMs: 300_000,
  pollTimeoutMs: 500,
  offsetCheckIntervalMs: 5_000,
  watchdogIntervalMs: 10_000,
  stallTimeoutMs: 120_000,
  commitToKafka: true,
} as const satisfies Partial<ConsumerOptions>;

/** librdkafka properties the consumer sets itself; overriding them would break the guarantees. */
const MANAGED_PROPERTIES = [
  'group.id',
  'enable.auto.commit',
  'enable.auto.offset.store',
  'isolation.level',
  'auto.offset.reset',
  'rebalance_cb',
  'offset_commit_cb',
  'partition.assignment.strategy',
  'group.protocol',
];

function positiveInt(name: string, value: number, min = 1): number {
  if (!Number.isInteger(value) || value < min) throw new OptionsError(`${name} must be an integer >= ${min}, got ${value}`);
  return value;
}

/** Fills in defaults and refuses unusable or unsafe combinations. */
export function resolveConsumerOptions(input: ConsumerOptions): ResolvedConsumerOptions {
  if ((input.databaseUrl === undefined) === (input.pool === undefined)) {
    throw new OptionsError('give exactly one of databaseUrl or pool');
  }
  if (typeof input.groupId !== 'string' || input.groupId.length === 0) throw new OptionsError('groupId is required');
  if (!Array.isArray(input.topics) || input.topics.length === 0) throw new OptionsError('topics: give at least one topic');
  if (typeof input.handler !== 'function') throw new OptionsError('handler must be a function (record, tx) => Promise<void>');
  const failurePolicy = input.failurePolicy ?? CONSUMER_DEFAULTS.failurePolicy;
  if (failurePolicy !== 'dead-letter' && failurePolicy !== 'block') {
    throw new OptionsError(`failurePolicy must be 'dead-letter' or 'block', got ${JSON.stringify(failurePolicy)}`);
  }
  for (const name of MANAGED_PROPERTIES) {
    if (input.kafkaProperties && name in input.kafkaProperties) {
      throw new OptionsError(`kafka property ${name} is managed by the consumer; remove it`);
    }
  }
  const schema = input.schema ?? CONSUMER_DEFAULTS.schema;
  const sessionTimeoutMs = positiveInt('sessionTimeoutMs', input.sessionTimeoutMs ?? CONSUMER_DEFAULTS.sessionTimeoutMs);
  const heartbeatIntervalMs = positiveInt('heartbeatIntervalMs', input.heartbeatIntervalMs ?? CONSUMER_DEFAULTS.heartbeatIntervalMs);
  const maxPollIntervalMs = positiveInt('maxPollIntervalMs', input.maxPollIntervalMs ?? CONSUMER_DEFAULTS.maxPollIntervalMs);
  if (heartbeatIntervalMs >= sessionTimeoutMs) throw new OptionsError('heartbeatIntervalMs must be below sessionTimeoutMs');
  if (maxPollIntervalMs < sessionTimeoutMs) throw new OptionsError('maxPollIntervalMs must be >= sessionTimeoutMs');
  const retryMinDelayMs = positiveInt('retryMinDelayMs', input.retryMinDelayMs ?? CONSUMER_DEFAULTS.retryMinDelayMs, 0);
  const retryMaxDelayMs = positiveInt('retryMaxDelayMs', input.retryMaxDelayMs ?? CONSUMER_DEFAULTS.retryMaxDelayMs, 0);
  if (retryMaxDelayMs < retryMinDelayMs) throw new OptionsError('retryMaxDelayMs must be >= retryMinDelayMs');
  return {
    databaseUrl: input.databaseUrl,
    pool: input.pool,
    brokers: input.brokers,
    groupId: input.groupId,
    topics: [...input.topics],
    handler: input.handler,
    schema,
    q: quoteSchema(schema),
    batchSize: positiveInt('batchSize', input.batchSize ?? CONSUMER_DEFAULTS.batchSize),
    maxAttempts: positiveInt('maxAttempts', input.maxAttempts ?? CONSUMER_DEFAULTS.maxAttempts),
    retryMinDelayMs,
    retryMaxDelayMs,
    failurePolicy,
    inbox: input.inbox ?? CONSUMER_DEFAULTS.inbox,
    fromBeginning: input.fromBeginning ?? CONSUMER_DEFAULTS.fromBeginning,
    logger: input.logger,
    clientId: input.clientId ?? CONSUMER_DEFAULTS.clientId,
    kafkaProperties: { ...input.kafkaProperties },
    sessionTimeoutMs,
    heartbeatIntervalMs,
    maxPollIntervalMs,
    pollTimeoutMs: positiveInt('pollTimeoutMs', input.pollTimeoutMs ?? CONSUMER_DEFAULTS.pollTimeoutMs),
    offsetCheckIntervalMs: positiveInt('offsetCheckIntervalMs', input.offsetCheckIntervalMs ?? CONSUMER_DEFAULTS.offsetCheckIntervalMs),
    watchdogIntervalMs: positiveInt('watchdogIntervalMs', input.watchdogIntervalMs ?? CONSUMER_DEFAULTS.watchdogIntervalMs),
    stallTimeoutMs: positiveInt('stallTimeoutMs', input.stallTimeoutMs ?? CONSUMER_DEFAULTS.stallTimeoutMs, 0),
    commitToKafka: input.commitToKafka ?? CONSUMER_DEFAULTS.commitToKafka,
  };
}
