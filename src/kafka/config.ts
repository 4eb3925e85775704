import { OptionsError } from '../errors.js';

/** librdkafka properties passed through to every client (TLS, SASL, ...). */
export type KafkaProperties = Record<string, string | number | boolean>;

/** Where the Kafka cluster is and how to talk to it. */
export interface KafkaConnection {
  /** `host:port` list, comma-separated or as an array. */
  brokers: string | readonly string[];
  /** client.id sent to the brokers. Default `outbox-relay`. */
  clientId?: string;
  /** Extra librdkafka properties for every client, e.g. `security.protocol`, `sasl.*`. */
  properties?: KafkaProperties;
}

export function brokerList(brokers: string | readonly string[]): string {
  const list = (typeof brokers === 'string' ? brokers.split(',') : [...brokers]).map((b) => b.trim()).filter(Boolean);
  if (list.length === 0) throw new OptionsError('brokers: give at least one host:port (KAFKA_BROKERS)');
  return list.join(',');
}

/** Properties shared by producers, consumers and admin clients. */
export function clientProperties(connection: KafkaConnection): KafkaProperties {
  return {
    'bootstrap.servers': brokerList(connection.brokers),
    'client.id': connection.clientId ?? 'outbox-relay',
    // A broker restart closes idle connections; that is routine, not worth a log line.
    'log.connection.close': false,
    // A request unanswered this long fails and its connection is closed and opened again
    // (librdkafka's default is 60 s; produce and fetch requests are capped by it too). A
    // connection that went silent without closing (a half-open path to one broker)
    // otherwise holds that broker's partitions for a minute: a relay's transaction waits on
    // it, a consumer's partitions fetch nothing. The group's join request has its own
    // timeout, derived from the poll interval, and is not cut short by it.
    'socket.timeout.ms': 10_000,
    ...connection.properties,
  };
}

/**
 * Producer presets. Each keeps acks=all, idempotence and transactions (set by the relay
 * itself, never by a preset); they only trade batching against latency.
 */
export const PRODUCER_PRESETS = {
  /**
   * acks=all, idempotent, zstd, 64 KiB batches, no linger: the relay queues a transaction's
   * records all at once, so lingering would only wait (twice: for the records, then for the
   * checkpoint that needs their offsets). The default.
   */
  reliable: { 'linger.ms': 0, 'batch.size': 65_536, 'compression.type': 'zstd' },
  /** Larger batches and linger for bulk backlogs: 512 KiB, 25 ms, lz4. */
  throughput: { 'linger.ms': 25, 'batch.size': 524_288, 'compression.type': 'lz4' },
  /** Sends at once: linger 0 ms, 32 KiB batches, lz4. */
  'low-latency': { 'linger.ms': 0, 'batch.size': 32_768, 'compression.type': 'lz4' },
} as const satisfies Record<string, KafkaProperties>;

export type ProducerPreset = keyof typeof PRODUCER_PRESETS;

/** Settings a transactional outbox producer must have; user properties cannot change them. */
export const SAFE_PRODUCER_PROPERTIES = {
  acks: 'all',
  'enable.idempotence': true,
  'max.in.flight.requests.per.connection': 5,
  // Java-compatible key hashing, so records keyed here land where Java producers put them.
  partitioner: 'murmur2_random',
} as const satisfies KafkaProperties;

/**
 * librdkafka properties each kind of client sets itself: a user's value would break the
 * guarantees (a second transactional id, auto-committed offsets, uncommitted reads, a
 * rebalance the consumer does not see), so it is refused, never silently overridden.
 */
const MANAGED_PROPERTIES = {
  relay: ['transactional.id', 'enable.auto.commit', 'isolation.level'],
  consumer: [
    'group.id',
    'enable.auto.commit',
    'enable.auto.offset.store',
    'isolation.level',
    'auto.offset.reset',
    'rebalance_cb',
    'offset_commit_cb',
    'partition.assignment.strategy',
    'group.protocol',
  ],
} as const;

/** Throws when user properties set one the `client` manages (see {@link MANAGED_PROPERTIES}). */
export function refuseManagedProperties(properties: KafkaProperties | undefined, client: keyof typeof MANAGED_PROPERTIES): void {
  for (const name of MANAGED_PROPERTIES[client]) {
    if (properties && name in properties) throw new OptionsError(`kafka property ${name} is managed by the ${client}; remove it`);
  }
}

/** Throws when user properties try to weaken {@link SAFE_PRODUCER_PROPERTIES}, or set one the relay manages. */
export function checkProducerOverrides(properties: KafkaProperties | undefined): void {
  for (const [name, safe] of Object.entries(SAFE_PRODUCER_PROPERTIES)) {
    if (properties && name in properties && String(properties[name]) !== String(safe)) {
      throw new OptionsError(`kafka property ${name}=${String(properties[name])} is not allowed: the relay requires ${name}=${String(safe)}`);
    }
  }
  refuseManagedProperties(properties, 'relay');
}
