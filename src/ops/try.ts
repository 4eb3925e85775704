import { randomBytes } from 'node:crypto';
import pg from 'pg';
import type { Message } from '@confluentinc/kafka-javascript';
import { sleep } from '../async.js';
import { quoteSchema } from '../db/identifiers.js';
import { migrate } from '../db/migrate.js';
import { withTransaction } from '../db/transaction.js';
import { OutboxError } from '../errors.js';
import { KafkaAdmin } from '../kafka/admin.js';
import { PRODUCER_PRESETS, type KafkaConnection, type ProducerPreset } from '../kafka/config.js';
import { CommittedReader } from '../kafka/reader.js';
import type { Logger } from '../log.js';
import { enqueue } from '../outbox/enqueue.js';
import { HEADER } from '../outbox/event.js';
import { createRelay } from '../relay/relay.js';
import { readSourceSql } from '../sql/outbox-source.js';

/**
 * The numeric settings of a try, with their CLI flag, bounds (large enough to see a
 * preset's effect, small enough to stay a try) and default.
 */
export const TRY_SETTINGS = {
  events: { flag: 'events', min: 1, max: 1_000_000, fallback: 10_000 },
  keyBuckets: { flag: 'key-buckets', min: 1, max: 1_000_000, fallback: 100 },
  payloadBytes: { flag: 'payload-bytes', min: 1, max: 1_000_000, fallback: 256 },
  shards: { flag: 'shards', min: 1, max: 64, fallback: 4 },
  batchSize: { flag: 'batch-size', min: 1, max: 10_000, fallback: 500 },
  partitions: { flag: 'partitions', min: 1, max: 256, fallback: 6 },
} as const;

export type TrySetting = keyof typeof TRY_SETTINGS;

export interface TryOptions {
  databaseUrl: string;
  connection: KafkaConnection;
  preset: ProducerPreset;
  events: number;
  /** Keys `key-0` … `key-(K-1)`, in rotation: 1 or 2 is a hot key. */
  keyBuckets: number;
  payloadBytes: number;
  shards: number;
  batchSize: number;
  /** An existing topic to publish to, or one to create; default a scratch topic. */
  topic?: string;
  /** Publish to a topic that holds records already (ours are told apart by their source id). */
  force?: boolean;
  /** Partitions of a topic the try creates. */
  partitions: number;
  logger: Logger;
  /** Stops the try early (a signal, a closed page): it rejects with STOPPED once it has cleaned up. */
  signal?: AbortSignal;
}

export interface TryReport {
  preset: ProducerPreset;
  /** The preset's librdkafka settings. */
  settings: Record<string, string | number>;
  events: number;
  keyBuckets: number;
  payloadBytes: number;
  shards: number;
  batchSize: number;
  topic: string;
  partitions: number;
  /** Rows committed per second by the writer (one transaction per 100 rows). */
  enqueuedPerSec: number;
  /** Records readable per second, from the first commit to the last record read. */
  publishedPerSec: number;
  elapsedMs: number;
  /** From a row's commit to its record read back read_committed. */
  latencyMs: { p50: number; p99: number };
  batches: number;
  meanBatchSize: number;
  /** Key and value bytes of the records read back, before compression. */
  rawBytes: number;
  compression: string;
  /** Bytes on the wire after compression: the client does not report them per run (null). */
  compressedBytes: number | null;
  partitionHistogram: Record<string, number>;
  /** The fullest partition's records against the mean per partition: 1 is even, `partitions` is all in one. */
  skew: number;
  samples: { key: string; partition: number; offset: number }[];
  duplicates: number;
  missing: number;
}

const ROWS_PER_TRANSACTION = 100;

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1))]!;
}

const round = (n: number, digits = 1) => Math.round(n * 10 ** digits) / 10 ** digits;

/**
 * Runs the real relay with the given settings on a scratch outbox schema and relay group:
 * writes `events` rows whose keys fall into `keyBuckets` buckets, publishes them, reads them
 * back read_committed, and reports speed, latency, batches, the partition spread and the
 * exactly-once check. Everything it created (schema, group, scratch and checkpoint topics)
 * is dropped before it returns; a topic it was given is left, with the try's records in it.
 */
export async function runTry(options: TryOptions): Promise<TryReport> {
  const id = randomBytes(4).toString('hex');
  const schema = `outbox_try_${id}`;
  const group = `outbox-try-${id}`;
  const topic = options.topic ?? `outbox-relay.try.${id}`;
  const checkpointTopic = `outbox-relay.try.${id}.checkpoints`;
  const log = options.logger.child({ component: 'try', topic, schema });
  const pool = new pg.Pool({ connectionString: options.databaseUrl, max: 4, application_name: 'outbox-relay try' });
  pool.on('error', () => undefined);
  const admin = new KafkaAdmin(options.connection);
  const created: string[] = [];
  let reader: CommittedReader | undefined;
  let relay: ReturnType<typeof createRelay> | undefined;
  let reading = false;
  let read: Promise<void> | undefined;
  try {
    const { partitions, from } = await prepareTopic(admin, topic, options, created);
    await migrate({ db: pool, schema });
    const q = quoteSchema(schema);
    const source = (await pool.query<{ source_id: string }>(readSourceSql(q))).rows[0]!.source_id;

    relay = createRelay({
      databaseUrl: options.databaseUrl,
      brokers: options.connection.brokers,
      kafka: options.connection.properties ? { properties: options.connection.properties } : undefined,
      schema,
      group,
      shards: options.shards,
      batchSize: options.batchSize,
      preset: options.preset,
      checkpointTopic,
      retention: false,
      logger: log,
    });
    created.push(checkpointTopic);
    const batches: number[] = [];
    relay.events.on('batch', (e) => batches.push(e.rows));
    await relay.start();

    reader = await CommittedReader.open(options.connection, `${group}-reader`, 'try read-back', 30_000);
    reader.assign([...from].map(([partition, offset]) => ({ topic, partition, offset })), 100);
    const seen = new Map<string, { message: Message; at: number }[]>();
    reading = true;
    read = (async () => {
      while (reading) {
        const messages = await reader.consume(1_000);
        const at = performance.now();
        for (const message of messages) {
          const headers = Object.assign({}, ...(message.headers ?? [])) as Record<string, Buffer | string | undefined>;
          if (String(headers[HEADER.source] ?? '') !== source) continue;
          const outboxId = String(headers[HEADER.outboxId] ?? '');
          const list = seen.get(outboxId) ?? [];
          list.push({ message, at });
          seen.set(outboxId, list);
        }
      }
    })();

    const committedAt = new Map<string, number>();
    const payload = randomBytes(Math.ceil((options.payloadBytes * 3) / 4)).toString('base64').slice(0, options.payloadBytes);
    const writeStart = performance.now();
    const stopped = () => {
      if (options.signal?.aborted) throw new OutboxError('STOPPED', 'the try was interrupted; what it created is dropped');
    };
    for (let n = 0; n < options.events; n += ROWS_PER_TRANSACTION) {
      stopped();
      const count = Math.min(ROWS_PER_TRANSACTION, options.events - n);
      const ids = await withTransaction(pool, (client) =>
        enqueue(client, Array.from({ length: count }, (_, i) => ({ topic, key: `key-${(n + i) % options.keyBuckets}`, payload })), { schema }),
      );
      const at = performance.now();
      for (const rowId of ids) committedAt.set(rowId, at);
    }
    const writeMs = performance.now() - writeStart;

    // Every record read back, or no new one for a while: then what is left is missing.
    let last = seen.size;
    let quietSince = performance.now();
    const quietMs = Math.max(30_000, options.events / 20);
    while (seen.size < options.events && performance.now() - quietSince < quietMs) {
      stopped();
      await sleep(50);
      if (seen.size !== last) {
        last = seen.size;
        quietSince = performance.now();
      }
    }
    // A short settle: a record published twice would show now.
    await sleep(500);
    reading = false;
    await read;

    const arrivals = [...seen.entries()].filter(([rowId]) => committedAt.has(rowId));
    const latencies = arrivals.map(([rowId, list]) => list[0]!.at - committedAt.get(rowId)!).sort((a, b) => a - b);
    const lastArrival = Math.max(writeStart, ...arrivals.map(([, list]) => list[0]!.at));
    const histogram = Object.fromEntries(Array.from({ length: partitions }, (_, p) => [String(p), 0]));
    let rawBytes = 0;
    const firsts = arrivals.map(([, list]) => list[0]!.message);
    for (const message of firsts) {
      histogram[String(message.partition)] = (histogram[String(message.partition)] ?? 0) + 1;
      rawBytes += (message.key?.length ?? 0) + (message.value?.length ?? 0);
    }
    const counts = Object.values(histogram);
    const mean = firsts.length / partitions;
    const step = Math.max(1, Math.floor(firsts.length / 10));
    const samples = firsts
      .filter((_, i) => i % step === 0)
      .slice(0, 10)
      .map((m) => ({ key: m.key?.toString() ?? '', partition: m.partition, offset: m.offset }));
    const elapsedMs = lastArrival - writeStart;
    const rows = batches.reduce((a, b) => a + b, 0);
    const settings = PRODUCER_PRESETS[options.preset];
    return {
      preset: options.preset,
      settings,
      events: options.events,
      keyBuckets: options.keyBuckets,
      payloadBytes: options.payloadBytes,
      shards: options.shards,
      batchSize: options.batchSize,
      topic,
      partitions,
      enqueuedPerSec: Math.round((options.events / writeMs) * 1000),
      publishedPerSec: elapsedMs > 0 ? Math.round((firsts.length / elapsedMs) * 1000) : 0,
      elapsedMs: Math.round(elapsedMs),
      latencyMs: { p50: round(percentile(latencies, 0.5)), p99: round(percentile(latencies, 0.99)) },
      batches: batches.length,
      meanBatchSize: batches.length > 0 ? round(rows / batches.length) : 0,
      rawBytes,
      compression: String(settings['compression.type']),
      compressedBytes: null,
      partitionHistogram: histogram,
      skew: mean > 0 ? round(Math.max(...counts) / mean, 2) : 0,
      samples,
      duplicates: [...seen.values()].filter((list) => list.length > 1).length,
      missing: options.events - arrivals.length,
    };
  } finally {
    reading = false;
    await read?.catch(() => undefined);
    await reader?.close().catch(() => undefined);
    await relay?.stop().catch((err: unknown) => log.warn({ err }, 'try: the relay did not stop cleanly'));
    await pool.query(`drop schema if exists ${quoteSchema(schema)} cascade`).catch((err: unknown) => log.warn({ err }, `try: could not drop schema ${schema}`));
    for (const name of created) await admin.deleteTopic(name).catch((err: unknown) => log.warn({ err }, `try: could not delete topic ${name}`));
    admin.close();
    await pool.end().catch(() => undefined);
  }
}

/**
 * The topic's partitions and where the try's records will start in each. A topic the try
 * creates is added to `created`; an existing one holding records is refused unless `force`.
 */
async function prepareTopic(admin: KafkaAdmin, topic: string, options: TryOptions, created: string[]): Promise<{ partitions: number; from: Map<number, number> }> {
  const [existing] = await admin.describeTopics([topic]).catch(() => []);
  if (existing && !existing.error) {
    const partitions = existing.partitions.length;
    const ids = Array.from({ length: partitions }, (_, p) => p);
    const [starts, ends] = await Promise.all([admin.startOffsets(topic, ids), admin.endOffsets(topic, ids)]);
    const held = ids.reduce((sum, p) => sum + Math.max(0, (ends.get(p) ?? 0) - (starts.get(p) ?? 0)), 0);
    if (held > 0 && !options.force) {
      throw new OutboxError(
        'INVALID_ARGUMENT',
        `topic ${topic} already holds data (${held} offsets of records and transaction markers): a try would add ${options.events} records to it, and its consumers would read them. ` +
          'Leave --topic out (a scratch topic is created and deleted), or give --force',
      );
    }
    return { partitions, from: new Map(ids.map((p) => [p, ends.get(p) ?? 0])) };
  }
  await admin.createTopic({ topic, num_partitions: options.partitions, replication_factor: -1 });
  created.push(topic);
  // A topic just created takes a moment to have leaders.
  for (const deadline = Date.now() + 30_000; ; ) {
    const [description] = await admin.describeTopics([topic]).catch(() => []);
    if (description && !description.error && description.partitions.length === options.partitions) break;
    if (Date.now() > deadline) throw new OutboxError('KAFKA_ERROR', `topic ${topic} was created but did not become usable`);
    await sleep(100);
  }
  return { partitions: options.partitions, from: new Map(Array.from({ length: options.partitions }, (_, p) => [p, 0])) };
}
