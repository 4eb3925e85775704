import { hostname } from 'node:os';
import type pg from 'pg';
import type { Registry } from 'prom-client';
import { DEFAULT_SCHEMA, quoteSchema } from '../db/identifiers.js';
import { OptionsError } from '../errors.js';
import { checkProducerOverrides, PRODUCER_PRESETS, type KafkaConnection, type ProducerPreset } from '../kafka/config.js';
import { DEFAULT_MAX_RECORD_BYTES } from '../kafka/record-size.js';
import { validateTopic } from '../outbox/validate.js';
import { createLogger, printableOptions, type Logger } from '../log.js';

export interface RelayOptions {
  /** PostgreSQL connection string. Either this or `pool`. */
  databaseUrl?: string;
  /** An existing pool (the relay needs `shards + 2` connections). Either this or `databaseUrl`. */
  pool?: pg.Pool;
  /** Kafka brokers, `host:port` list. */
  brokers: string | readonly string[];
  /** client.id and extra librdkafka properties (TLS, SASL). Safety settings cannot be overridden. */
  kafka?: Omit<KafkaConnection, 'brokers'>;
  /** Schema of the outbox tables. Default `outbox`. */
  schema?: string;
  /** Relay group: relays of one group share the shards. Prefix of transactional ids. Default `outbox-relay`. */
  group?: string;
  /** Number of shards (each one Kafka transactional.id and one lease), 1–1024. Default 4. Fixed per group: a new layout is a new group taking over (`takeOverFrom`). */
  shards?: number;
  /** Rows per Kafka transaction, at most 10,000 (the checkpoint record lists them). Default 500. */
  batchSize?: number;
  /** Bytes of records per Kafka transaction (64 KiB–1 GiB); a claim reads no payload beyond it. Default 16 MiB. */
  maxBatchBytes?: number;
  /** Producer preset: `reliable` (default), `throughput` or `low-latency`. All keep acks=all, idempotence, transactions. */
  preset?: ProducerPreset;
  /** Safety-net poll when no notification arrives, in ms. Default 1000. */
  pollIntervalMs?: number;
  /** Shard lease duration in ms; a dead relay's shards are taken over after this. Default 10000. */
  leaseMs?: number;
  /** Attempts before a row that keeps failing is marked dead. Default 10. */
  maxAttempts?: number;
  /** Backoff before retrying a failed row: first delay and cap, in ms. Default 1000 / 300000. */
  rowBackoff?: { minMs?: number; maxMs?: number };
  /** Backoff after a broker/database failure: first delay and cap, in ms. Default 200 / 30000. */
  failureBackoff?: { minMs?: number; maxMs?: number };
  /** Compacted topic for checkpoint records. Default `outbox-relay.checkpoints.<group>`. */
  checkpointTopic?: string;
  /** Replication factor for the checkpoint topic when the relay creates it. Default: min(3, brokers). */
  checkpointReplicationFactor?: number;
  /** transaction.timeout.ms. Default 60000. */
  transactionTimeoutMs?: number;
  /** Timeout for init/commit/abort of a transaction. Default 30000. */
  transactionOperationTimeoutMs?: number;
  /**
   * How long the relay waits for PostgreSQL's answer to one statement before it gives the
   * connection up as dead (a silent, half-open connection) and recovers on a new one.
   * Default 40000 (its sessions' statement_timeout is 30 s). Not applied to a `pool` given.
   */
  queryTimeoutMs?: number;
  /** Refuse to start when target topics are missing or can lose data (RF < 3). Default false: warn. */
  strict?: boolean;
  /** Sent rows are kept this long, then deleted in batches. `false` keeps them forever. Default 7 days. */
  retention?: false | { keepMs?: number; intervalMs?: number; batchSize?: number };
  /** Unique id of this relay process. Default `<hostname>-<pid>-<random>`. */
  relayId?: string;
  /**
   * The relay group that serves this outbox now, to take over from (a new layout: another
   * shard count, another group name). Start relays of the new group with this; they wait
   * until the old group has no live relay and no open transaction, fence it, apply its
   * last checkpoints, then serve the outbox. See "Changing the layout" in the README.
   */
  takeOverFrom?: string;
  /** prom-client registry for the relay's metrics (e.g. the application's). Default: a registry of its own (`relay.metrics`). */
  metricsRegistry?: Registry;
  logger?: Logger;
}

export interface ResolvedRelayOptions {
  databaseUrl: string | undefined;
  pool: pg.Pool | undefined;
  connection: KafkaConnection;
  schema: string;
  /** Quoted schema for SQL. */
  q: string;
  group: string;
  takeOverFrom: string | undefined;
  shards: number;
  batchSize: number;
  maxBatchBytes: number;
  /**
   * Largest record the relay publishes, by the one size rule (recordBytes): the producer's
   * `message.max.bytes` (from `kafka.properties`, librdkafka's default 1,000,000). Give
   * `enqueue` the same number as `maxMessageBytes`.
   */
  maxRecordBytes: number;
  preset: ProducerPreset;
  pollIntervalMs: number;
  leaseMs: number;
  maxAttempts: number;
  rowBackoff: { minMs: number; maxMs: number };
  failureBackoff: { minMs: number; maxMs: number };
  checkpointTopic: string;
  checkpointReplicationFactor: number | undefined;
  transactionTimeoutMs: number;
  transactionOperationTimeoutMs: number;
  queryTimeoutMs: number;
  strict: boolean;
  retention: false | { keepMs: number; intervalMs: number; batchSize: number };
  relayId: string;
  metricsRegistry: Registry | undefined;
  logger: Logger;
}

const DEFAULTS = {
  schema: DEFAULT_SCHEMA,
  group: 'outbox-relay',
  shards: 4,
  batchSize: 500,
  maxBatchBytes: 16 * 1024 * 1024,
  preset: 'reliable',
  pollIntervalMs: 1_000,
  leaseMs: 10_000,
  maxAttempts: 10,
  rowBackoff: { minMs: 1_000, maxMs: 300_000 },
  failureBackoff: { minMs: 200, maxMs: 30_000 },
  transactionTimeoutMs: 60_000,
  transactionOperationTimeoutMs: 30_000,
  queryTimeoutMs: 40_000,
  strict: false,
  retention: { keepMs: 7 * 24 * 3600 * 1000, intervalMs: 60_000, batchSize: 1_000 },
} as const satisfies Partial<ResolvedRelayOptions>;

/**
 * Bounds of every numeric option, inclusive. Outside them a relay would not work (zero,
 * negative, fractions), would never notice a failure (leases or timeouts of days), or would
 * hold more than a process should (a batch of gigabytes).
 */
export const RELAY_OPTION_BOUNDS = {
  shards: [1, 1_024],
  batchSize: [1, 10_000],
  maxBatchBytes: [65_536, 1_073_741_824],
  maxRecordBytes: [1_000, 1_000_000_000],
  pollIntervalMs: [10, 3_600_000],
  leaseMs: [1_000, 3_600_000],
  maxAttempts: [1, 1_000_000],
  'rowBackoff.minMs': [1, 86_400_000],
  'rowBackoff.maxMs': [1, 86_400_000],
  'failureBackoff.minMs': [1, 600_000],
  'failureBackoff.maxMs': [1, 3_600_000],
  checkpointReplicationFactor: [1, 32_767],
  transactionTimeoutMs: [1_000, 3_600_000],
  transactionOperationTimeoutMs: [1_000, 600_000],
  queryTimeoutMs: [1_000, 3_600_000],
  'retention.keepMs': [60_000, 10 * 366 * 86_400_000],
  'retention.intervalMs': [10, 86_400_000],
  'retention.batchSize': [1, 100_000],
} as const satisfies Record<string, readonly [number, number]>;

type Bounded = keyof typeof RELAY_OPTION_BOUNDS;

function intOption(name: Bounded, value: unknown, fallback: number): number {
  const [min, max] = RELAY_OPTION_BOUNDS[name];
  const v = value ?? fallback;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    throw new OptionsError(`${name} must be an integer in ${min}..${max}, got ${describe(value)}`);
  }
  return v;
}

function describe(value: unknown): string {
  return typeof value === 'string' ? JSON.stringify(value) : String(value);
}

const KNOWN_OPTIONS = new Set<string>([
  'databaseUrl', 'pool', 'brokers', 'kafka', 'schema', 'group', 'shards', 'batchSize', 'maxBatchBytes', 'preset',
  'pollIntervalMs', 'leaseMs', 'maxAttempts', 'rowBackoff', 'failureBackoff', 'checkpointTopic',
  'checkpointReplicationFactor', 'transactionTimeoutMs', 'transactionOperationTimeoutMs', 'queryTimeoutMs', 'strict', 'retention',
  'relayId', 'logger', 'takeOverFrom', 'metricsRegistry',
]);

function checkKeys(name: string, value: unknown, known: readonly string[]): void {
  if (value === undefined) return;
  if (typeof value !== 'object' || value === null) throw new OptionsError(`${name} must be an object, got ${describe(value)}`);
  for (const key of Object.keys(value)) {
    if (!known.includes(key)) throw new OptionsError(`${name}.${key} is not an option (known: ${known.join(', ')})`);
  }
}

/** The producer's `message.max.bytes` from the user's properties, or librdkafka's default. */
function maxRecordBytes(properties: KafkaConnection['properties']): number {
  const given = properties?.['message.max.bytes'];
  const value = typeof given === 'string' && /^\d+$/.test(given) ? Number(given) : given;
  return intOption('maxRecordBytes', value, DEFAULT_MAX_RECORD_BYTES);
}

/** Resolves relay options against their defaults; throws {@link OptionsError} for unsafe or invalid ones. */
export function resolveRelayOptions(input: RelayOptions): ResolvedRelayOptions {
  if (typeof input !== 'object' || input === null) throw new OptionsError('relay options must be an object');
  for (const key of Object.keys(input)) {
    // A misspelt option would otherwise be ignored and its default used without a word.
    if (!KNOWN_OPTIONS.has(key)) throw new OptionsError(`${key} is not a relay option`);
  }
  if (!input.databaseUrl && !input.pool) throw new OptionsError('give databaseUrl or pool');
  if (input.databaseUrl !== undefined && typeof input.databaseUrl !== 'string') throw new OptionsError('databaseUrl must be a string');
  if (!input.brokers || input.brokers.length === 0) throw new OptionsError('brokers: give at least one host:port');
  checkKeys('kafka', input.kafka, ['clientId', 'properties']);
  checkProducerOverrides(input.kafka?.properties);
  const group = input.group ?? DEFAULTS.group;
  if (typeof group !== 'string' || !/^[A-Za-z0-9._-]{1,100}$/.test(group)) {
    throw new OptionsError(`group ${describe(group)}: use 1-100 characters of A-Z a-z 0-9 . _ -`);
  }
  const takeOverFrom = input.takeOverFrom;
  if (takeOverFrom !== undefined && (typeof takeOverFrom !== 'string' || !/^[A-Za-z0-9._-]{1,100}$/.test(takeOverFrom) || takeOverFrom === group)) {
    throw new OptionsError(`takeOverFrom ${describe(takeOverFrom)}: give the name of the relay group serving the outbox now, not this one`);
  }
  const preset = input.preset ?? DEFAULTS.preset;
  if (!(preset in PRODUCER_PRESETS)) throw new OptionsError(`preset must be one of ${Object.keys(PRODUCER_PRESETS).join(', ')}, got ${describe(preset)}`);
  const schema = input.schema ?? DEFAULTS.schema;
  const checkpointTopic = validateTopic(input.checkpointTopic ?? `outbox-relay.checkpoints.${group}`);
  const leaseMs = intOption('leaseMs', input.leaseMs, DEFAULTS.leaseMs);
  const transactionTimeoutMs = intOption('transactionTimeoutMs', input.transactionTimeoutMs, DEFAULTS.transactionTimeoutMs);
  const transactionOperationTimeoutMs = intOption(
    'transactionOperationTimeoutMs',
    input.transactionOperationTimeoutMs,
    DEFAULTS.transactionOperationTimeoutMs,
  );
  const backoff = (name: 'rowBackoff' | 'failureBackoff', given: { minMs?: number; maxMs?: number } | undefined, d: { minMs: number; maxMs: number }) => {
    checkKeys(name, given, ['minMs', 'maxMs']);
    const minMs = intOption(`${name}.minMs`, given?.minMs, d.minMs);
    const maxMs = intOption(`${name}.maxMs`, given?.maxMs, Math.min(RELAY_OPTION_BOUNDS[`${name}.maxMs`][1], Math.max(d.maxMs, minMs)));
    if (maxMs < minMs) throw new OptionsError(`${name}.maxMs must be >= ${name}.minMs`);
    return { minMs, maxMs };
  };
  if (input.retention !== undefined && input.retention !== false) checkKeys('retention', input.retention, ['keepMs', 'intervalMs', 'batchSize']);
  const retention =
    input.retention === false
      ? false
      : {
          keepMs: intOption('retention.keepMs', input.retention?.keepMs, DEFAULTS.retention.keepMs),
          intervalMs: intOption('retention.intervalMs', input.retention?.intervalMs, DEFAULTS.retention.intervalMs),
          batchSize: intOption('retention.batchSize', input.retention?.batchSize, DEFAULTS.retention.batchSize),
        };
  if (input.strict !== undefined && typeof input.strict !== 'boolean') throw new OptionsError(`strict must be true or false, got ${describe(input.strict)}`);
  const relayId = input.relayId ?? `${hostname()}-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
  if (typeof relayId !== 'string' || relayId.length === 0 || relayId.length > 200 || /[\p{Cc}]/u.test(relayId)) {
    throw new OptionsError('relayId must be 1-200 printable characters');
  }
  const recordLimit = maxRecordBytes(input.kafka?.properties);
  const maxBatchBytes = intOption('maxBatchBytes', input.maxBatchBytes, DEFAULTS.maxBatchBytes);
  return printableOptions({
    databaseUrl: input.databaseUrl,
    pool: input.pool,
    connection: { brokers: input.brokers, clientId: input.kafka?.clientId ?? `outbox-relay-${group}`, properties: input.kafka?.properties },
    schema,
    q: quoteSchema(schema),
    group,
    takeOverFrom,
    shards: intOption('shards', input.shards, DEFAULTS.shards),
    batchSize: intOption('batchSize', input.batchSize, DEFAULTS.batchSize),
    maxBatchBytes,
    maxRecordBytes: recordLimit,
    preset,
    pollIntervalMs: intOption('pollIntervalMs', input.pollIntervalMs, DEFAULTS.pollIntervalMs),
    leaseMs,
    maxAttempts: intOption('maxAttempts', input.maxAttempts, DEFAULTS.maxAttempts),
    rowBackoff: backoff('rowBackoff', input.rowBackoff, DEFAULTS.rowBackoff),
    failureBackoff: backoff('failureBackoff', input.failureBackoff, DEFAULTS.failureBackoff),
    checkpointTopic,
    checkpointReplicationFactor:
      input.checkpointReplicationFactor === undefined ? undefined : intOption('checkpointReplicationFactor', input.checkpointReplicationFactor, 3),
    transactionTimeoutMs,
    transactionOperationTimeoutMs,
    queryTimeoutMs: intOption('queryTimeoutMs', input.queryTimeoutMs, DEFAULTS.queryTimeoutMs),
    strict: input.strict ?? DEFAULTS.strict,
    retention,
    relayId,
    metricsRegistry: input.metricsRegistry,
    logger: input.logger ?? createLogger(),
  });
}
