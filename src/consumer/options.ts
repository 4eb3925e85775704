import type pg from 'pg';
import type { Registry } from 'prom-client';
import { DEFAULT_SCHEMA, quoteSchema } from '../db/identifiers.js';
import { OptionsError } from '../errors.js';
import type { ClaimCheckStore } from '../claim-check/store.js';
import { withClaimCheck, withClaimCheckBatch } from '../claim-check/resolve.js';
import { refuseManagedProperties, type KafkaProperties } from '../kafka/config.js';
import { printableOptions, type Logger } from '../log.js';
import type { BatchHandler, FailurePolicy, OffsetOutOfRangePolicy, RecordHandler } from './handler.js';

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
  /** Applies one record inside the transaction that stores its offset. Give this or `batchHandler`. */
  handler?: RecordHandler;
  /**
   * Applies the records of one partition batch in one call, inside the transaction that
   * stores their offset (see {@link BatchHandler}). Give this or `handler`.
   * `handlerTimeoutMs` bounds the whole call.
   */
  batchHandler?: BatchHandler;
  /**
   * Claim-check stores to resolve records whose body was stored out of band (enqueue's
   * `claimCheck`): the handler then sees the body, verified against its sha256.
   */
  claimCheck?: ClaimCheckStore | readonly ClaimCheckStore[];
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
   * Skip records whose `outbox-source` + `outbox-id` headers this group has already applied
   * (an outbox row published again). Records without both headers are never skipped by
   * this (their offsets alone de-duplicate them). Default `true`.
   */
  inbox?: boolean;
  /**
   * Longest one handler call may run. Past it, the batch's transaction is aborted at the
   * database (the backend is terminated), the record counts as failed (retried, then the
   * failure policy), and nothing the handler does later can commit. The same limit is set
   * in PostgreSQL (statement and idle-in-transaction timeouts of the batch), so even a
   * consumer frozen mid-batch holds its locks no longer. A handler is started only when its
   * whole time fits before the poll deadline, so it must be at most `maxPollIntervalMs`
   * less a tenth of it (at most 5 s), less `lockTimeoutMs`, less 3 s.
   * Default 30,000 ms.
   */
  handlerTimeoutMs?: number;
  /**
   * Longest a batch waits for its partition's offset row lock (held by a batch of a former
   * owner that has not been aborted yet); past it the batch is retried. At least 100.
   * Default 5,000 ms.
   */
  lockTimeoutMs?: number;
  /**
   * How long the consumer waits for PostgreSQL's answer to one statement before it gives the
   * connection up as dead (a silent, half-open connection: no error, no answer) and goes on
   * with a new one; the batch on it is rolled back by the database and retried. Above
   * `handlerTimeoutMs`, which bounds every statement of a batch at the database. Default
   * `handlerTimeoutMs` + 10,000 ms. Not applied to a `pool` given.
   */
  queryTimeoutMs?: number;
  /**
   * Partitions applied at the same time (one transaction, so one pool connection, each).
   * Default `min(partitions in the fetch, pool size - 1)`; one connection stays free for
   * offset checks and for aborting a stuck batch. At most pool size - 1.
   */
  partitionConcurrency?: number;
  /** Pool size when the consumer creates the pool from `databaseUrl`. Default 10. */
  poolSize?: number;
  /** Stored offset of another log incarnation: see {@link OffsetOutOfRangePolicy}. Default `earliest`. */
  onOffsetOutOfRange?: OffsetOutOfRangePolicy;
  /**
   * Inbox rows (outbox ids applied) older than `keepMs` are deleted every `intervalMs`, in
   * batches of `batchSize`, never a row whose record's offset is not yet committed past.
   * `false` keeps them forever. Default keep 7 days, every 60 s, 1,000 rows a batch.
   */
  inboxRetention?: false | { keepMs?: number; intervalMs?: number; batchSize?: number };
  /** prom-client registry for the consumer's metrics. Default: a registry of its own (`consumer.metrics`). */
  metricsRegistry?: Registry;
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
  /** The record handler; with `batchHandler`, a call of it with one record (dead-letter replays use it). */
  handler: RecordHandler;
  batchHandler: BatchHandler | undefined;
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
  handlerTimeoutMs: number;
  lockTimeoutMs: number;
  queryTimeoutMs: number;
  partitionConcurrency: number | undefined;
  poolSize: number;
  onOffsetOutOfRange: OffsetOutOfRangePolicy;
  inboxRetention: false | { keepMs: number; intervalMs: number; batchSize: number };
  metricsRegistry: Registry | undefined;
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
  handlerTimeoutMs: 30_000,
  lockTimeoutMs: 5_000,
  poolSize: 10,
  onOffsetOutOfRange: 'earliest',
  inboxRetention: { keepMs: 7 * 24 * 3600 * 1000, intervalMs: 60_000, batchSize: 1_000 },
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

/**
 * How long before max.poll.interval.ms runs out this member stops starting handlers and
 * must have polled: a tenth of the interval, at most 5 s.
 */
export function pollMarginMs(maxPollIntervalMs: number): number {
  return Math.min(5_000, Math.ceil(maxPollIntervalMs / 10));
}

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
  if ((input.handler === undefined) === (input.batchHandler === undefined)) {
    throw new OptionsError('give exactly one of handler (record, tx) => Promise<void> or batchHandler (records, tx) => Promise<void>');
  }
  if (input.handler !== undefined && typeof input.handler !== 'function') throw new OptionsError('handler must be a function (record, tx) => Promise<void>');
  if (input.batchHandler !== undefined && typeof input.batchHandler !== 'function') throw new OptionsError('batchHandler must be a function (records, tx) => Promise<void>');
  const batchHandler = input.batchHandler === undefined ? undefined : withClaimCheckBatch(input.batchHandler, input.claimCheck);
  const failurePolicy = input.failurePolicy ?? CONSUMER_DEFAULTS.failurePolicy;
  if (failurePolicy !== 'dead-letter' && failurePolicy !== 'block') {
    throw new OptionsError(`failurePolicy must be 'dead-letter' or 'block', got ${JSON.stringify(failurePolicy)}`);
  }
  refuseManagedProperties(input.kafkaProperties, 'consumer');
  const schema = input.schema ?? CONSUMER_DEFAULTS.schema;
  const sessionTimeoutMs = positiveInt('sessionTimeoutMs', input.sessionTimeoutMs ?? CONSUMER_DEFAULTS.sessionTimeoutMs);
  const heartbeatIntervalMs = positiveInt('heartbeatIntervalMs', input.heartbeatIntervalMs ?? CONSUMER_DEFAULTS.heartbeatIntervalMs);
  const maxPollIntervalMs = positiveInt('maxPollIntervalMs', input.maxPollIntervalMs ?? CONSUMER_DEFAULTS.maxPollIntervalMs);
  if (heartbeatIntervalMs >= sessionTimeoutMs) throw new OptionsError('heartbeatIntervalMs must be below sessionTimeoutMs');
  if (maxPollIntervalMs < sessionTimeoutMs) throw new OptionsError('maxPollIntervalMs must be >= sessionTimeoutMs');
  const retryMinDelayMs = positiveInt('retryMinDelayMs', input.retryMinDelayMs ?? CONSUMER_DEFAULTS.retryMinDelayMs, 0);
  const retryMaxDelayMs = positiveInt('retryMaxDelayMs', input.retryMaxDelayMs ?? CONSUMER_DEFAULTS.retryMaxDelayMs, 0);
  if (retryMaxDelayMs < retryMinDelayMs) throw new OptionsError('retryMaxDelayMs must be >= retryMinDelayMs');
  const handlerTimeoutMs = positiveInt('handlerTimeoutMs', input.handlerTimeoutMs ?? CONSUMER_DEFAULTS.handlerTimeoutMs, 100);
  const lockTimeoutMs = positiveInt('lockTimeoutMs', input.lockTimeoutMs ?? CONSUMER_DEFAULTS.lockTimeoutMs, 100);
  // Before its first handler a batch may wait for the topic-id lookup (2 s at most) and the
  // offset row lock: the handler's whole time must still fit before the poll deadline.
  const handlerLimit = maxPollIntervalMs - pollMarginMs(maxPollIntervalMs) - lockTimeoutMs - 3_000;
  if (handlerTimeoutMs > handlerLimit) {
    throw new OptionsError(
      `handlerTimeoutMs (${handlerTimeoutMs}) must be below maxPollIntervalMs (${maxPollIntervalMs}) with room to spare (at most ${handlerLimit}): ` +
        'a handler is started only when its whole time fits before the poll deadline, so that the group never removes the member while it runs. ' +
        'Lower handlerTimeoutMs or raise maxPollIntervalMs.',
    );
  }
  const queryTimeoutMs = positiveInt('queryTimeoutMs', input.queryTimeoutMs ?? handlerTimeoutMs + 10_000, 1_000);
  if (queryTimeoutMs <= Math.max(handlerTimeoutMs, lockTimeoutMs)) {
    throw new OptionsError(
      `queryTimeoutMs (${queryTimeoutMs}) must be above handlerTimeoutMs (${handlerTimeoutMs}) and lockTimeoutMs (${lockTimeoutMs}): ` +
        'a statement the database is still allowed to run would otherwise cost its connection.',
    );
  }
  if (input.pool !== undefined && input.queryTimeoutMs !== undefined) throw new OptionsError('queryTimeoutMs applies to the pool the consumer creates; set query_timeout on your own pool yourself');
  const onOffsetOutOfRange = input.onOffsetOutOfRange ?? CONSUMER_DEFAULTS.onOffsetOutOfRange;
  if (onOffsetOutOfRange !== 'earliest' && onOffsetOutOfRange !== 'block') {
    throw new OptionsError(`onOffsetOutOfRange must be 'earliest' or 'block', got ${JSON.stringify(onOffsetOutOfRange)}`);
  }
  const retention = CONSUMER_DEFAULTS.inboxRetention;
  const inboxRetention =
    input.inboxRetention === false
      ? false
      : {
          keepMs: positiveInt('inboxRetention.keepMs', input.inboxRetention?.keepMs ?? retention.keepMs),
          intervalMs: positiveInt('inboxRetention.intervalMs', input.inboxRetention?.intervalMs ?? retention.intervalMs),
          batchSize: positiveInt('inboxRetention.batchSize', input.inboxRetention?.batchSize ?? retention.batchSize),
        };
  if (input.pool !== undefined && input.poolSize !== undefined) throw new OptionsError('poolSize applies to the pool the consumer creates; size your own pool yourself');
  return printableOptions({
    databaseUrl: input.databaseUrl,
    pool: input.pool,
    brokers: input.brokers,
    groupId: input.groupId,
    topics: [...input.topics],
    handler: batchHandler ? (record, tx) => batchHandler([record], tx) : withClaimCheck(input.handler!, input.claimCheck),
    batchHandler,
    schema,
    q: quoteSchema(schema),
    batchSize: positiveInt('batchSize', input.batchSize ?? CONSUMER_DEFAULTS.batchSize),
    maxAttempts: positiveInt('maxAttempts', input.maxAttempts ?? CONSUMER_DEFAULTS.maxAttempts),
    retryMinDelayMs,
    retryMaxDelayMs,
    failurePolicy,
    inbox: input.inbox ?? CONSUMER_DEFAULTS.inbox,
    fromBeginning: input.fromBeginning ?? CONSUMER_DEFAULTS.fromBeginning,
    handlerTimeoutMs,
    lockTimeoutMs,
    queryTimeoutMs,
    partitionConcurrency: input.partitionConcurrency === undefined ? undefined : positiveInt('partitionConcurrency', input.partitionConcurrency),
    poolSize: positiveInt('poolSize', input.poolSize ?? CONSUMER_DEFAULTS.poolSize, 2),
    onOffsetOutOfRange,
    inboxRetention,
    metricsRegistry: input.metricsRegistry,
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
  });
}
