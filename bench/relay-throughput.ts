// Relay benchmark on running services: backlog drain throughput, then steady-state
// commit→read latency with an exactly-once check. Everything it creates (schema, topics,
// relay group) is fresh per run and removed at the end.
//
//   DATABASE_URL=postgres://... KAFKA_BROKERS=host:port \
//     node --import tsx bench/relay-throughput.ts [--rows N] [--preset reliable|throughput|low-latency] \
//       [--shards N] [--batch-size N] [--rate N] [--seconds N]
//
// Exit code: 0 when every row arrived exactly once, 1 on duplicates or missing records,
// 2 when the run itself failed (bad arguments, services unreachable, timeouts), 130 when
// interrupted by SIGINT or SIGTERM (after cleaning up).
import Kafka from '@confluentinc/kafka-javascript';
import type { Message, MessageHeader } from '@confluentinc/kafka-javascript';
import { randomBytes } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import os from 'node:os';
import { relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { createLogger, createRelay, enqueue, migrate, PARTITION_UNITS, PRODUCER_PRESETS, type OutboxEvent, type PartitionUnit, type ProducerPreset, type Relay } from '../src/index.js';
import { KafkaAdmin } from '../src/kafka/admin.js';
import type { BatchPhases } from '../src/relay/events.js';
import { TransactionalProducer } from '../src/kafka/producer.js';
import { cpuPerRow } from './proc.js';

const PARTITIONS = 6;
const KEYS = 1_000;
const PAYLOAD_BYTES = 200;
const INSERT_CHUNK = 1_000;
const WRITER_CONCURRENCY = 8;
const DRAIN_TIMEOUT_MS = 10 * 60_000;
const DRAIN_STALL_MS = 60_000;
const ARRIVAL_TIMEOUT_MS = 60_000;
const DUPLICATE_WATCH_MS = 1_500;

// ---------------------------------------------------------------------------------------
// Arguments and environment

function usage(message: string): never {
  console.error(`relay-throughput: ${message}`);
  console.error(
    'usage: node --import tsx bench/relay-throughput.ts [--rows N] [--preset reliable|throughput|low-latency] [--shards N] [--batch-size N] [--rate N] [--seconds N]',
  );
  console.error('environment: DATABASE_URL, KAFKA_BROKERS (required); LOG_LEVEL (relay log level, default error)');
  process.exit(2);
}

function positive(name: string, raw: string, max = 10_000_000): number {
  const n = Number(raw);
  if (!Number.isInteger(n) || n <= 0 || n > max) usage(`--${name} must be an integer in 1..${max}, got ${raw}`);
  return n;
}

let parsed: ReturnType<typeof parse>;
function parse() {
  return parseArgs({
    strict: true,
    allowPositionals: false,
    options: {
      rows: { type: 'string', default: '20000' },
      preset: { type: 'string', default: 'reliable' },
      shards: { type: 'string', default: '4' },
      'batch-size': { type: 'string', default: '500' },
      rate: { type: 'string', default: '200' },
      seconds: { type: 'string', default: '10' },
      // Scenario 3: the relay at a higher rate, beside a raw producer committing every 5 ms (0: skip).
      'high-rate': { type: 'string', default: '1000' },
      // The opt-in partitioned outbox (migrate's partitionBy): day, week or month.
      'partition-by': { type: 'string' },
      // Also write the JSON result here (bench/run.ts reads it).
      out: { type: 'string' },
    },
  }).values;
}
try {
  parsed = parse();
} catch (err) {
  usage((err as Error).message);
}

if (!(parsed.preset in PRODUCER_PRESETS)) usage(`--preset must be one of ${Object.keys(PRODUCER_PRESETS).join(', ')}, got ${parsed.preset}`);
const params = {
  rows: positive('rows', parsed.rows),
  keys: KEYS,
  payloadBytes: PAYLOAD_BYTES,
  partitions: PARTITIONS,
  preset: parsed.preset as ProducerPreset,
  shards: positive('shards', parsed.shards, 1024),
  batchSize: positive('batch-size', parsed['batch-size'], 100_000),
  steadyRate: positive('rate', parsed.rate, 100_000),
  steadySeconds: positive('seconds', parsed.seconds, 3_600),
  highRate: parsed['high-rate'] === '0' ? 0 : positive('high-rate', parsed['high-rate'], 100_000),
  partitionBy: (parsed['partition-by'] ?? null) as PartitionUnit | null,
};
if (params.partitionBy !== null && !(PARTITION_UNITS as readonly string[]).includes(params.partitionBy)) {
  usage(`--partition-by must be one of ${PARTITION_UNITS.join(', ')}, got ${params.partitionBy}`);
}

const databaseUrl = process.env.DATABASE_URL || usage('DATABASE_URL is not set');
const brokers = process.env.KAFKA_BROKERS || usage('KAFKA_BROKERS is not set');

// ---------------------------------------------------------------------------------------
// Small helpers

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

interface Distribution {
  count: number;
  mean: number;
  p50: number;
  p95: number;
  p99: number;
  max: number;
}

/** Nearest-rank percentiles. */
function distribution(values: readonly number[]): Distribution {
  if (values.length === 0) return { count: 0, mean: 0, p50: 0, p95: 0, p99: 0, max: 0 };
  const sorted = [...values].sort((a, b) => a - b);
  const rank = (q: number) => sorted[Math.max(0, Math.ceil(q * sorted.length) - 1)]!;
  const mean = sorted.reduce((sum, v) => sum + v, 0) / sorted.length;
  return { count: sorted.length, mean: round(mean), p50: rank(0.5), p95: rank(0.95), p99: rank(0.99), max: sorted.at(-1)! };
}

/** The latency at each of these shares of the records (a CDF a chart can draw): [percent, ms]. */
const CDF_POINTS = [1, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 98, 99, 99.5, 99.9, 100];
function cdf(values: readonly number[]): [number, number][] {
  if (values.length === 0) return [];
  const sorted = [...values].sort((a, b) => a - b);
  return CDF_POINTS.map((p) => [p, sorted[Math.max(0, Math.ceil((p / 100) * sorted.length) - 1)]!]);
}

function round(n: number, digits = 1): number {
  const f = 10 ** digits;
  return Math.round(n * f) / f;
}

/** A JSON payload of exactly PAYLOAD_BYTES bytes. */
function payload(seq: number, key: string): Record<string, string | number> {
  const body: Record<string, string | number> = { seq, key, kind: 'bench', pad: '' };
  body.pad = 'x'.repeat(PAYLOAD_BYTES - Buffer.byteLength(JSON.stringify(body)));
  return body;
}

function header(message: Message, name: string): string | undefined {
  for (const h of message.headers ?? []) if (name in h) return String(h[name]);
  return undefined;
}

async function waitForTopic(admin: KafkaAdmin, topic: string, partitions: number): Promise<void> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    const [d] = await admin.describeTopics([topic]).catch(() => []);
    if (d && !d.error && d.partitions.length === partitions) return;
    if (Date.now() > deadline) throw new Error(`topic ${topic} did not appear in metadata with ${partitions} partitions`);
    await sleep(100);
  }
}

// ---------------------------------------------------------------------------------------
// Run state, shared with the clean-up

const runId = randomBytes(4).toString('hex');
const schema = `bench_${runId}`;
const group = `bench-${runId}`;
const backlogTopic = `bench-${runId}-backlog`;
const rawTopic = `bench-${runId}-raw`;
const steadyTopic = `bench-${runId}-steady`;
const highTopic = `bench-${runId}-high`;
const windowTopic = `bench-${runId}-window`;
/** The raw limit of scenario 3: one transaction per this many ms, of whatever records arrived. */
const RAW_WINDOW_MS = 5;
const logger = createLogger({ level: process.env.LOG_LEVEL ?? 'error', name: 'outbox-relay-bench' });

const pool = new pg.Pool({ connectionString: databaseUrl, max: WRITER_CONCURRENCY + 2, application_name: 'outbox-relay bench' });
pool.on('error', () => undefined);
const admin = new KafkaAdmin({ brokers, clientId: 'outbox-relay-bench' });
const createdTopics: string[] = [];
let schemaCreated = false;
let relay: Relay | undefined;
let reader: Kafka.KafkaConsumer | undefined;
let stopReading: (() => Promise<void>) | undefined;
let cleaning: Promise<void> | undefined;
let interrupted = false;

/** Stops and removes everything this run created. Safe to call twice. */
function cleanUp(): Promise<void> {
  cleaning ??= (async () => {
    const step = async (what: string, run: () => Promise<unknown>) => {
      try {
        await run();
      } catch (err) {
        console.error(`clean-up: could not ${what}: ${(err as Error).message}`);
      }
    };
    if (stopReading) await step('stop reading', stopReading);
    if (reader) {
      const r = reader;
      await step('disconnect the reader', () => new Promise<void>((resolve) => r.disconnect(() => resolve())));
    }
    if (relay) {
      const r = relay;
      await step('stop the relay', () => r.stop());
      createdTopics.push(r.options.checkpointTopic);
    }
    if (schemaCreated) await step(`drop schema ${schema}`, () => pool.query(`drop schema if exists "${schema}" cascade`));
    for (const topic of createdTopics) await step(`delete topic ${topic}`, () => admin.deleteTopic(topic));
    admin.close();
    await step('end the pool', () => pool.end());
  })();
  return cleaning;
}

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    interrupted = true;
    console.error(`\n${signal}: cleaning up`);
    void cleanUp().finally(() => process.exit(130));
  });
}

// ---------------------------------------------------------------------------------------
// Scenario 1: backlog drain

interface BatchEvent {
  at: number;
  rows: number;
  durationMs: number;
  phases: BatchPhases;
}
let phase: 'backlog' | 'steady' | 'idle' = 'idle';
const batches: Record<'backlog' | 'steady', BatchEvent[]> = { backlog: [], steady: [] };
let failedRows = 0;
let deadRows = 0;

function batchSummary(list: readonly BatchEvent[]) {
  const rows = list.reduce((sum, b) => sum + b.rows, 0);
  return {
    count: list.length,
    rows,
    meanRowsPerBatch: list.length === 0 ? 0 : round(rows / list.length),
    durationMs: distribution(list.map((b) => b.durationMs)),
    // Where a batch's time goes, median ms of each phase (see the relay's `batch` event).
    phasesMsP50: Object.fromEntries(
      (['claimMs', 'beginMs', 'produceMs', 'checkpointMs', 'commitMs', 'markMs'] as const).map((k) => [k, distribution(list.map((b) => b.phases[k])).p50]),
    ),
  };
}

async function insertBacklog(): Promise<{ insertMs: number }> {
  const started = performance.now();
  for (let from = 0; from < params.rows; from += INSERT_CHUNK) {
    const events: OutboxEvent[] = [];
    for (let i = from; i < Math.min(params.rows, from + INSERT_CHUNK); i++) {
      const key = `key-${i % KEYS}`;
      events.push({ topic: backlogTopic, key, payload: payload(i, key), eventType: 'BenchEvent' });
    }
    const client = await pool.connect();
    try {
      await client.query('begin');
      await enqueue(client, events, { schema });
      await client.query('commit');
    } catch (err) {
      await client.query('rollback').catch(() => undefined);
      throw err;
    } finally {
      client.release();
    }
  }
  return { insertMs: performance.now() - started };
}

async function unsent(topic: string): Promise<{ unsent: number; dead: number }> {
  const { rows } = await pool.query<{ unsent: number; dead: number }>(
    `select count(*) filter (where state <> 'sent')::int as unsent, count(*) filter (where state = 'dead')::int as dead
       from "${schema}".messages where topic = $1 and state <> 'sent'`,
    [topic],
  );
  return rows[0] ?? { unsent: 0, dead: 0 };
}

/**
 * {@link unsent} through the small indexes of unsent rows (publishable, held, dead), for
 * polling while the relay drains: the count above reads the whole table, and run every
 * few ms it would compete with the relay for the same cores.
 */
async function unsentByIndexes(topic: string): Promise<{ unsent: number; dead: number }> {
  const { rows } = await pool.query<{ unsent: number; dead: number }>(
    `select (select count(*)::int from "${schema}".messages where state in ('pending', 'failed') and not held and topic = $1)
          + (select count(*)::int from "${schema}".messages where held and topic = $1) as unsent,
            (select count(*)::int from "${schema}".messages where state = 'dead' and topic = $1) as dead`,
    [topic],
  );
  return rows[0] ?? { unsent: 0, dead: 0 };
}

async function drainBacklog(r: Relay) {
  phase = 'backlog';
  const startCalled = performance.now();
  const cpu = cpuPerRow();
  await r.start();
  const startMs = performance.now() - startCalled;
  let last = { unsent: params.rows, at: performance.now() };
  // The batches' events count the rows as they are marked; the database is asked only
  // when they add up to the backlog, or now and then to see a stall or dead rows.
  const marked = () => batches.backlog.reduce((n, b) => n + b.rows, 0);
  let askedAt = 0;
  for (;;) {
    const now = performance.now();
    if (marked() >= params.rows || now - askedAt >= 1_000) {
      askedAt = now;
      const { unsent: left, dead } = await unsentByIndexes(backlogTopic);
      if (left === 0 && dead === 0 && (await unsent(backlogTopic)).unsent === 0) break;
      if (dead > 0) throw new Error(`${dead} backlog rows went dead; see LOG_LEVEL=warn output`);
      if (left < last.unsent) last = { unsent: left, at: now };
      if (now - last.at > DRAIN_STALL_MS) throw new Error(`backlog drain stalled at ${left} unsent rows`);
      if (now - startCalled > DRAIN_TIMEOUT_MS) throw new Error(`backlog not drained after ${DRAIN_TIMEOUT_MS / 1000} s (${left} unsent)`);
    }
    await sleep(20);
  }
  const cpuUsPerRow = cpu.stop(params.rows);
  const polledDone = performance.now();
  phase = 'idle';
  const list = batches.backlog;
  // The last 'batch' event is emitted right after its rows are marked sent: a sharper end
  // than the poll that noticed it. The first batch's start excludes producer start-up.
  const lastEnd = list.length > 0 ? Math.max(...list.map((b) => b.at)) : polledDone;
  const firstStart = list.length > 0 ? Math.min(...list.map((b) => b.at - b.durationMs)) : startCalled;
  const drainMs = lastEnd - startCalled;
  const afterStartupMs = lastEnd - firstStart;
  return {
    startMs: round(startMs),
    drainMs: round(drainMs),
    firstBatchAfterMs: round(firstStart - startCalled),
    rowsPerSec: Math.round(params.rows / (drainMs / 1000)),
    rowsPerSecAfterStartup: Math.round(params.rows / (afterStartupMs / 1000)),
    cpuUsPerRow,
    batches: batchSummary(list),
  };
}

// ---------------------------------------------------------------------------------------
// Scenario 0: the raw limit, measured in the same run

/**
 * What the relay's Kafka side could do with nothing of PostgreSQL: `shards` transactional
 * producers with the relay's preset, each committing transactions of `batchSize` records
 * of the same size and keys, `rows` records in all, to a topic of the same partitions.
 * Timed from the first transaction's begin to the last commit (producers initialised
 * before), so it compares with the drain's rate from its first batch.
 */
/** CPU per row, µs: the benchmark's process (producers or relay), PostgreSQL, the broker. */
function cpuText(cpu: { processUs: number; postgresUs: number; brokerUs: number }): string {
  return `CPU per row ${cpu.processUs} µs here, ${cpu.postgresUs} µs PostgreSQL, ${cpu.brokerUs} µs broker`;
}

async function rawProduce(): Promise<{ rowsPerSec: number; ms: number; producers: number; cpuUsPerRow: ReturnType<ReturnType<typeof cpuPerRow>['stop']> }> {
  const producers = Array.from({ length: params.shards }, (_, i) => new TransactionalProducer({ connection: { brokers }, transactionalId: `${group}-raw-${i}`, preset: params.preset }));
  try {
    await Promise.all(producers.map(async (p) => {
      await p.connect();
      await p.init(30_000);
    }));
    let next = 0;
    const cpu = cpuPerRow();
    const started = performance.now();
    await Promise.all(
      producers.map(async (p) => {
        for (;;) {
          const first = next;
          if (first >= params.rows) return;
          next = Math.min(params.rows, first + params.batchSize);
          await p.begin();
          const sends = [];
          for (let seq = first; seq < next; seq++) {
            const key = `customer-${seq % KEYS}`;
            // The identity headers the relay adds to each record.
            const headers: MessageHeader[] = [{ 'outbox-id': Buffer.from(String(seq + 1)) }, { 'outbox-source': Buffer.from(runId) }, { 'created-at': Buffer.from(new Date().toISOString()) }];
            sends.push(p.produce({ topic: rawTopic, key, value: Buffer.from(JSON.stringify(payload(seq, key))), headers }));
          }
          await Promise.all(sends);
          await p.commit(30_000);
        }
      }),
    );
    const ms = performance.now() - started;
    return { rowsPerSec: Math.round(params.rows / (ms / 1000)), ms: round(ms), producers: producers.length, cpuUsPerRow: cpu.stop(params.rows) };
  } finally {
    await Promise.all(producers.map((p) => p.disconnect()));
  }
}

// ---------------------------------------------------------------------------------------
// Scenario 2: steady state

interface Reading {
  received: Map<string, number>;
  /** When each outbox id was first read (ms since the epoch, sub-millisecond). */
  readAt: Map<string, number>;
  unexpected: number;
}

/** When each steady-state row's writer saw its COMMIT return (ms since the epoch, sub-millisecond). */
const committedAt = new Map<string, number>();

async function startReader(topic: string): Promise<{ reading: Reading; stop: () => Promise<void> }> {
  const consumer = new Kafka.KafkaConsumer(
    {
      'bootstrap.servers': brokers,
      'client.id': 'outbox-relay-bench-reader',
      'group.id': `bench-reader-${runId}`,
      'enable.auto.commit': false,
      'isolation.level': 'read_committed',
      'fetch.wait.max.ms': 10,
      'log.connection.close': false,
    },
    {},
  );
  reader = consumer;
  await new Promise<void>((resolve, reject) => consumer.connect({ timeout: 10_000 }, (err) => (err ? reject(err) : resolve())));
  // A consume call returns as soon as one record is there (then with whatever else is
  // buffered), not after a gap in the stream or 500 records: the time a call returns is
  // then the time its records arrived, within a millisecond or so under a steady stream.
  consumer.setDefaultConsumeTimeout(100);
  (consumer as unknown as { setDefaultIsTimeoutOnlyForFirstMessage(v: boolean): void }).setDefaultIsTimeoutOnlyForFirstMessage(true);
  consumer.assign(Array.from({ length: PARTITIONS }, (_, partition) => ({ topic, partition, offset: 0 })));
  const reading: Reading = { received: new Map(), readAt: new Map(), unexpected: 0 };
  let running = true;
  let readError: unknown;
  // Never rejects: a consume error ends the loop and is rethrown by stop().
  const loop = (async () => {
    while (running) {
      let messages: Message[];
      try {
        messages = await new Promise<Message[]>((resolve, reject) => consumer.consume(500, (err, m) => (err ? reject(err) : resolve(m))));
      } catch (err) {
        if (running) readError = err;
        running = false;
        break;
      }
      const readAt = performance.timeOrigin + performance.now();
      for (const m of messages) {
        const id = header(m, 'outbox-id');
        if (id === undefined) {
          reading.unexpected += 1;
          continue;
        }
        reading.received.set(id, (reading.received.get(id) ?? 0) + 1);
        if (!reading.readAt.has(id)) reading.readAt.set(id, readAt);
      }
    }
  })();
  let stopped: Promise<void> | undefined;
  stopReading = () => {
    stopped ??= (async () => {
      running = false;
      await loop;
      if (readError !== undefined) throw readError;
    })();
    return stopped;
  };
  return { reading, stop: stopReading };
}

async function steadyState(topic: string, rate: number) {
  const { reading, stop } = await startReader(topic);
  phase = 'steady';
  const total = rate * params.steadySeconds;
  const written = new Set<string>();
  const lags: number[] = [];
  const commitMs: number[] = [];
  const inFlight = new Set<Promise<void>>();
  let writeError: unknown;

  const writeOne = async (seq: number) => {
    const key = `key-${seq % KEYS}`;
    const client = await pool.connect();
    try {
      const began = performance.now();
      await client.query('begin');
      const [id] = await enqueue(client, { topic, key, payload: payload(seq, key), eventType: 'BenchEvent' }, { schema });
      await client.query('commit');
      const committed = performance.now();
      commitMs.push(committed - began);
      // Latency runs from here: the writer's COMMIT has returned.
      committedAt.set(id!, performance.timeOrigin + committed);
      written.add(id!);
    } catch (err) {
      await client.query('rollback').catch(() => undefined);
      throw err;
    } finally {
      client.release();
    }
  };

  const t0 = performance.now();
  for (let seq = 0; seq < total && writeError === undefined && !interrupted; seq++) {
    const due = t0 + (seq * 1000) / rate;
    const wait = due - performance.now();
    if (wait > 0) await sleep(wait);
    while (inFlight.size >= WRITER_CONCURRENCY) await Promise.race(inFlight);
    lags.push(Math.max(0, performance.now() - due));
    const p: Promise<void> = writeOne(seq)
      .catch((err: unknown) => {
        writeError ??= err;
      })
      .finally(() => inFlight.delete(p));
    inFlight.add(p);
  }
  await Promise.all(inFlight);
  const writeMs = performance.now() - t0;
  if (writeError !== undefined) throw writeError;

  // Wait for every committed row, then keep reading a little so that duplicates show up.
  const deadline = performance.now() + ARRIVAL_TIMEOUT_MS;
  while (!interrupted && [...written].some((id) => !reading.received.has(id)) && performance.now() < deadline) await sleep(50);
  await sleep(DUPLICATE_WATCH_MS);
  await stop();
  phase = 'idle';

  let duplicates = 0;
  let missing = 0;
  for (const id of written) {
    const n = reading.received.get(id) ?? 0;
    if (n === 0) missing += 1;
    else if (n > 1) duplicates += n - 1;
  }
  const unknownIds = [...reading.received.keys()].filter((id) => !written.has(id)).length;
  const { unsent: notSentInDb } = await unsent(topic);
  const latencies = [...written].flatMap((id) => {
    const read = reading.readAt.get(id);
    const committed = committedAt.get(id);
    return read === undefined || committed === undefined ? [] : [round(read - committed)];
  });
  const steadyBatches = batchSummary(batches.steady);
  batches.steady = [];
  return {
    targetRate: rate,
    seconds: params.steadySeconds,
    written: written.size,
    achievedRate: round(written.size / (writeMs / 1000)),
    scheduleLagMs: distribution(lags.map((l) => round(l))),
    writerTransactionMs: distribution(commitMs.map((l) => round(l))),
    received: reading.received.size,
    duplicates,
    missing,
    unexpected: reading.unexpected + unknownIds,
    notSentInDb,
    // From the writer's COMMIT returning to the reader receiving the record, per record.
    latencyMs: distribution(latencies),
    latencyCdfMs: cdf(latencies),
    batches: steadyBatches,
  };
}

/**
 * Scenario 3's raw limit: records made at `rate` per second (the moment one is made stands
 * for a writer's COMMIT returning) and committed by one transactional producer, one
 * transaction every RAW_WINDOW_MS of whatever arrived meanwhile, with no PostgreSQL; the
 * same reader times each record's arrival.
 */
async function rawWindow(rate: number) {
  const { reading, stop } = await startReader(windowTopic);
  const producer = new TransactionalProducer({ connection: { brokers }, transactionalId: `${group}-window`, preset: params.preset });
  const made = new Map<string, number>();
  try {
    await producer.connect();
    await producer.init(30_000);
    const total = rate * params.steadySeconds;
    let buffered: { id: string; key: string; seq: number }[] = [];
    let seq = 0;
    const t0 = performance.now();
    const maker = (async () => {
      for (; seq < total && !interrupted; seq++) {
        const wait = t0 + (seq * 1000) / rate - performance.now();
        if (wait > 0) await sleep(wait);
        const id = `window-${seq}`;
        made.set(id, performance.timeOrigin + performance.now());
        buffered.push({ id, key: `key-${seq % KEYS}`, seq });
      }
    })();
    let done = false;
    void maker.finally(() => (done = true));
    while (!(done && buffered.length === 0) && !interrupted) {
      const windowStart = performance.now();
      if (buffered.length > 0) {
        const records = buffered;
        buffered = [];
        await producer.begin();
        await Promise.all(
          records.map((r) =>
            producer.produce({ topic: windowTopic, key: r.key, value: Buffer.from(JSON.stringify(payload(r.seq, r.key))), headers: [{ 'outbox-id': Buffer.from(r.id) }] }),
          ),
        );
        await producer.commit(30_000);
      }
      const left = RAW_WINDOW_MS - (performance.now() - windowStart);
      if (left > 0) await sleep(left);
    }
    const deadline = performance.now() + ARRIVAL_TIMEOUT_MS;
    while (!interrupted && [...made.keys()].some((id) => !reading.received.has(id)) && performance.now() < deadline) await sleep(50);
  } finally {
    await stop();
    await producer.disconnect();
  }
  const latencies = [...made.entries()].flatMap(([id, at]) => {
    const read = reading.readAt.get(id);
    return read === undefined ? [] : [round(read - at)];
  });
  const missing = [...made.keys()].filter((id) => !reading.received.has(id)).length;
  return { rate, windowMs: RAW_WINDOW_MS, records: made.size, missing, latencyMs: distribution(latencies), latencyCdfMs: cdf(latencies) };
}

// ---------------------------------------------------------------------------------------
// Main

async function machine() {
  const cpus = os.cpus();
  const { rows } = await pool.query<{ server_version: string }>('show server_version');
  return {
    cpus: cpus.length,
    cpuModel: cpus[0]?.model.trim() ?? 'unknown',
    totalMemoryMb: Math.round(os.totalmem() / 2 ** 20),
    platform: `${os.platform()} ${os.release()} ${os.arch()}`,
    node: process.version,
    postgres: rows[0]?.server_version ?? 'unknown',
  };
}

async function main(): Promise<number> {
  const startedAt = new Date();
  const info = await machine();
  console.log(
    `outbox-relay bench: preset=${params.preset}${params.partitionBy ? ` partitioned by ${params.partitionBy}` : ''} shards=${params.shards} batch-size=${params.batchSize} rows=${params.rows} ` +
      `steady=${params.steadyRate}/s×${params.steadySeconds}s (${info.cpus} cpus, node ${info.node}, postgres ${info.postgres})`,
  );

  await migrate({ db: pool, schema, logger, ...(params.partitionBy === null ? {} : { partitionBy: params.partitionBy }) });
  schemaCreated = true;
  for (const topic of [rawTopic, backlogTopic, steadyTopic, ...(params.highRate > 0 ? [highTopic, windowTopic] : [])]) {
    await admin.createTopic({ topic, num_partitions: PARTITIONS, replication_factor: 1 });
    createdTopics.push(topic);
    await waitForTopic(admin, topic, PARTITIONS);
  }

  const raw = await rawProduce();
  console.log(`raw       ${raw.producers} transactional producers, ${params.batchSize} records per transaction, no PostgreSQL: ${raw.rowsPerSec} rows/s; ${cpuText(raw.cpuUsPerRow)}`);

  const { insertMs } = await insertBacklog();
  console.log(`backlog   inserted ${params.rows} rows in ${(insertMs / 1000).toFixed(2)} s; starting the relay`);

  // The benchmark's process also holds the writer and the reader; its RSS before the relay
  // exists is the baseline, and the peak during drain and steady state is reported beside it.
  const rssAtStart = process.memoryUsage().rss;
  let rssPeak = rssAtStart;
  const rssSampler = setInterval(() => (rssPeak = Math.max(rssPeak, process.memoryUsage().rss)), 100);
  rssSampler.unref();
  relay = createRelay({
    databaseUrl,
    brokers,
    schema,
    group,
    shards: params.shards,
    batchSize: params.batchSize,
    preset: params.preset,
    logger,
    retention: false,
  });
  relay.events.on('batch', ({ rows, durationMs, phases }) => {
    if (phase !== 'idle') batches[phase].push({ at: performance.now(), rows, durationMs, phases });
  });
  relay.events.on('rowFailed', ({ dead }) => {
    failedRows += 1;
    if (dead) deadRows += 1;
  });

  const backlog = { insertMs: round(insertMs), ...(await drainBacklog(relay)) };
  const b = backlog.batches;
  console.log(
    `backlog   ${params.rows} rows drained in ${(backlog.drainMs / 1000).toFixed(2)} s: ${backlog.rowsPerSec} rows/s ` +
      `(${backlog.rowsPerSecAfterStartup} rows/s from the first batch); ${b.count} batches, ${b.meanRowsPerBatch} rows/batch, ` +
      `batch ms p50 ${b.durationMs.p50} p95 ${b.durationMs.p95} p99 ${b.durationMs.p99} max ${b.durationMs.max}; ` +
      `${round(backlog.rowsPerSecAfterStartup / raw.rowsPerSec, 2)}× the raw limit; ${cpuText(backlog.cpuUsPerRow)}`,
  );

  const steady = await steadyState(steadyTopic, params.steadyRate);
  const l = steady.latencyMs;
  console.log(
    `steady    ${steady.written} rows at ${steady.targetRate}/s (achieved ${steady.achievedRate}/s); ` +
      `commit→read ms p50 ${l.p50} p95 ${l.p95} p99 ${l.p99} max ${l.max}; ` +
      `duplicates ${steady.duplicates}, missing ${steady.missing}, unexpected ${steady.unexpected}, unsent in db ${steady.notSentInDb}`,
  );
  const ph = steady.batches.phasesMsP50;
  console.log(
    `          a steady batch's time, median ms: claim ${ph.claimMs}, begin ${ph.beginMs}, records delivered ${ph.produceMs}, checkpoint delivered ${ph.checkpointMs}, ` +
      `commit ${ph.commitMs}, mark ${ph.markMs}; writer's own transaction p50 ${steady.writerTransactionMs.p50}`,
  );

  // Scenario 3: the same at a higher rate, beside the raw limit of one transaction per window.
  let high: (Awaited<ReturnType<typeof steadyState>> & { raw: Awaited<ReturnType<typeof rawWindow>>; p99ToRaw: number }) | null = null;
  if (params.highRate > 0) {
    const relayHigh = await steadyState(highTopic, params.highRate);
    const raw = await rawWindow(params.highRate);
    high = { ...relayHigh, raw, p99ToRaw: round(relayHigh.latencyMs.p99 / Math.max(0.1, raw.latencyMs.p99), 2) };
    console.log(
      `high      ${relayHigh.written} rows at ${params.highRate}/s (achieved ${relayHigh.achievedRate}/s); commit→read ms p50 ${relayHigh.latencyMs.p50} p99 ${relayHigh.latencyMs.p99}; ` +
        `raw, one transaction per ${RAW_WINDOW_MS} ms: p50 ${raw.latencyMs.p50} p99 ${raw.latencyMs.p99} → p99 ${high.p99ToRaw}× the raw limit; ` +
        `duplicates ${relayHigh.duplicates}, missing ${relayHigh.missing}, unsent in db ${relayHigh.notSentInDb}`,
    );
  }

  clearInterval(rssSampler);
  const memory = { rssAtStartMb: round(rssAtStart / 2 ** 20), rssPeakMb: round(rssPeak / 2 ** 20) };
  console.log(`memory    process RSS ${memory.rssAtStartMb} MB before the relay was created, peak ${memory.rssPeakMb} MB during drain and steady state`);

  const exact = (r: { duplicates: number; missing: number; unexpected: number; notSentInDb: number }) =>
    r.duplicates === 0 && r.missing === 0 && r.unexpected === 0 && r.notSentInDb === 0;
  const ok = exact(steady) && (high === null || exact(high));
  const result = {
    benchmark: 'relay-throughput',
    ok,
    startedAt: startedAt.toISOString(),
    finishedAt: new Date().toISOString(),
    machine: info,
    parameters: params,
    raw,
    backlog: { ...backlog, ratioToRaw: round(backlog.rowsPerSecAfterStartup / raw.rowsPerSec, 2) },
    steady,
    high,
    memory,
    rowFailures: { failed: failedRows, dead: deadRows },
  };
  const dir = new URL('./results/', import.meta.url);
  await mkdir(dir, { recursive: true });
  const file = new URL(`${startedAt.toISOString().replaceAll(':', '-')}-${params.preset}.json`, dir);
  await writeFile(file, `${JSON.stringify(result, null, 2)}\n`);
  if (parsed.out) await writeFile(parsed.out, `${JSON.stringify(result, null, 2)}\n`);
  console.log(`result    ${ok ? 'OK: every row exactly once' : 'FAILED: duplicates or missing records'} → ${relative(process.cwd(), fileURLToPath(file))}`);
  return ok ? 0 : 1;
}

let code = 2;
try {
  code = await main();
} catch (err) {
  if (!interrupted) console.error(`relay-throughput: ${(err as Error).stack ?? String(err)}`);
  code = 2;
} finally {
  await cleanUp();
}
process.exit(interrupted ? 130 : code);
