import { hostname } from 'node:os';
import type pg from 'pg';
import { DEFAULT_SCHEMA, quoteSchema } from '../db/identifiers.js';
import { OptionsError } from '../errors.js';
import { checkProducerOverrides, PRODUCER_PRESETS, type KafkaConnection, type ProducerPreset } from '../kafka/config.js';
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
  /** Number of shards (each one Kafka transactional.id and one lease). Default 4. Change only with all relays stopped. */
  shards?: number;
  /** Rows per Kafka transaction, at most 10,000 (the checkpoint record lists them). Default 500. */
  batchSize?: number;
  /** Bytes of records per Kafka transaction; a batch is cut before it would exceed this. Default 16 MiB. */
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
  /** Refuse to start when target topics are missing or can lose data (RF < 3). Default false: warn. */
  strict?: boolean;
  /** Sent rows are kept this long, then deleted in batches. `false` keeps them forever. Default 7 days. */
  retention?: false | { keepMs?: number; intervalMs?: number; batchSize?: number };
  /** Unique id of this relay process. Default `<hostname>-<pid>-<random>`. */
  relayId?: string;
  logger?: Logger;
}

export interface ResolvedRelayOptions {
  databaseUrl: string | undefined;
  pool: pg.Pool | undefined;
  connection: KafkaConnection;
  schema: string;
  /** Quoted schema for SQL. */
  sqlSchema: string;
  group: string;
  shards: number;
  batchSize: number;
  maxBatchBytes: number;
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
  strict: boolean;
  retention: false | { keepMs: number; intervalMs: number; batchSize: number };
  relayId: string;
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
  strict: false,
  retention: { keepMs: 7 * 24 * 3600 * 1000, intervalMs: 60_000, batchSize: 1_000 },
} as const satisfies Partial<ResolvedRelayOptions>;

function positiveInt(name: string, value: number | undefined, fallback: number, max = Number.MAX_SAFE_INTEGER): number {
  const v = value ?? fallback;
  if (!Number.isInteger(v) || v <= 0 || v > max) throw new OptionsError(`${name} must be an integer in 1..${max}, got ${String(value)}`);
  return v;
}

/** Resolves relay options against their defaults; throws {@link OptionsError} for unsafe or invalid ones. */
export function resolveRelayOptions(input: RelayOptions): ResolvedRelayOptions {
  if (!input.databaseUrl && !input.pool) throw new OptionsError('give databaseUrl or pool');
  if (!input.brokers || input.brokers.length === 0) throw new OptionsError('brokers: give at least one host:port');
  checkProducerOverrides(input.kafka?.properties);
  const group = input.group ?? DEFAULTS.group;
  if (!/^[A-Za-z0-9._-]{1,100}$/.test(group)) throw new OptionsError(`group ${JSON.stringify(group)}: use 1-100 characters of A-Z a-z 0-9 . _ -`);
  const preset = input.preset ?? DEFAULTS.preset;
  if (!(preset in PRODUCER_PRESETS)) throw new OptionsError(`preset must be one of ${Object.keys(PRODUCER_PRESETS).join(', ')}, got ${preset}`);
  const schema = input.schema ?? DEFAULTS.schema;
  const checkpointTopic = validateTopic(input.checkpointTopic ?? `outbox-relay.checkpoints.${group}`);
  const leaseMs = positiveInt('leaseMs', input.leaseMs, DEFAULTS.leaseMs);
  if (leaseMs < 1_000) throw new OptionsError('leaseMs must be at least 1000');
  const transactionTimeoutMs = positiveInt('transactionTimeoutMs', input.transactionTimeoutMs, DEFAULTS.transactionTimeoutMs);
  const backoff = (name: string, given: { minMs?: number; maxMs?: number } | undefined, d: { minMs: number; maxMs: number }) => {
    const minMs = positiveInt(`${name}.minMs`, given?.minMs, d.minMs);
    const maxMs = positiveInt(`${name}.maxMs`, given?.maxMs, Math.max(d.maxMs, minMs));
    if (maxMs < minMs) throw new OptionsError(`${name}.maxMs must be >= ${name}.minMs`);
    return { minMs, maxMs };
  };
  const retention =
    input.retention === false
      ? false
      : {
          keepMs: positiveInt('retention.keepMs', input.retention?.keepMs, DEFAULTS.retention.keepMs),
          intervalMs: positiveInt('retention.intervalMs', input.retention?.intervalMs, DEFAULTS.retention.intervalMs),
          batchSize: positiveInt('retention.batchSize', input.retention?.batchSize, DEFAULTS.retention.batchSize, 100_000),
        };
  return printableOptions({
    databaseUrl: input.databaseUrl,
    pool: input.pool,
    connection: { brokers: input.brokers, clientId: input.kafka?.clientId ?? `outbox-relay-${group}`, properties: input.kafka?.properties },
    schema,
    sqlSchema: quoteSchema(schema),
    group,
    shards: positiveInt('shards', input.shards, DEFAULTS.shards, 1024),
    batchSize: positiveInt('batchSize', input.batchSize, DEFAULTS.batchSize, 10_000),
    maxBatchBytes: positiveInt('maxBatchBytes', input.maxBatchBytes, DEFAULTS.maxBatchBytes),
    preset,
    pollIntervalMs: positiveInt('pollIntervalMs', input.pollIntervalMs, DEFAULTS.pollIntervalMs),
    leaseMs,
    maxAttempts: positiveInt('maxAttempts', input.maxAttempts, DEFAULTS.maxAttempts, 1_000_000),
    rowBackoff: backoff('rowBackoff', input.rowBackoff, DEFAULTS.rowBackoff),
    failureBackoff: backoff('failureBackoff', input.failureBackoff, DEFAULTS.failureBackoff),
    checkpointTopic,
    checkpointReplicationFactor: input.checkpointReplicationFactor,
    transactionTimeoutMs,
    transactionOperationTimeoutMs: positiveInt('transactionOperationTimeoutMs', input.transactionOperationTimeoutMs, DEFAULTS.transactionOperationTimeoutMs),
    strict: input.strict ?? DEFAULTS.strict,
    retention,
    relayId: input.relayId ?? `${hostname()}-${process.pid}-${Math.random().toString(36).slice(2, 8)}`,
    logger: input.logger ?? createLogger(),
  });
}
