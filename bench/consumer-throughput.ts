// Consumer benchmark on running services: how fast records of one topic are applied to
// PostgreSQL, by the exactly-once consumer and by the at-least-once loops it is compared
// with, each doing the same work per record (one row per record) in the same run.
//
//   DATABASE_URL=postgres://... KAFKA_BROKERS=host:port \
//     node --import tsx bench/consumer-throughput.ts [--records N] [--repeats N] [--batch-size N]
//
// Every variant runs in a child process of its own (so its RSS is its own), from the
// beginning of the same topic, in a group of its own, into a table of its own; the parent
// then checks what each wrote: every record once (duplicates and missing are reported,
// and fail the run for the exactly-once variants).
import Kafka from '@confluentinc/kafka-javascript';
import type { Message, MessageHeader } from '@confluentinc/kafka-javascript';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { createConsumer, createLogger, migrate } from '../src/index.js';
import { KafkaAdmin } from '../src/kafka/admin.js';
import { clientProperties } from '../src/kafka/config.js';
import { TransactionalProducer } from '../src/kafka/producer.js';
import { HEADER } from '../src/outbox/event.js';

export const CONSUMER_VARIANTS = ['plain', 'alo-per-record', 'alo-multi-row', 'eo-per-record', 'eo-batch'] as const;
export type ConsumerVariant = (typeof CONSUMER_VARIANTS)[number];

const PARTITIONS = 6;
const KEYS = 64;
const PAYLOAD_BYTES = 1_024;
const PRODUCE_CHUNK = 1_000;
const RUN_TIMEOUT_MS = 10 * 60_000;

export interface ConsumerRun {
  variant: ConsumerVariant;
  records: number;
  /** From the first record received to the last one applied. */
  ms: number;
  recordsPerSec: number;
  peakRssMb: number;
  /** RSS of the variant's process before it connected: Node.js, the loader and the modules. */
  startRssMb: number;
  duplicates: number;
  missing: number;
}

export interface ConsumerBenchResult {
  records: number;
  batchSize: number;
  repeats: number;
  runs: ConsumerRun[];
  /** Per variant: median records/s and peak RSS over the repeats. */
  medians: Partial<Record<ConsumerVariant, { recordsPerSec: number; peakRssMb: number }>>;
  ratios: { eoPerRecordToAloPerRecord: number; eoBatchToAloMultiRow: number };
}

const median = (values: number[]): number => {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
};

const ratio = (a: { recordsPerSec: number } | undefined, b: { recordsPerSec: number } | undefined): number => (a && b ? a.recordsPerSec / b.recordsPerSec : Number.NaN);

// ---------------------------------------------------------------------------------------
// The child: one variant, one table, one group; prints one JSON line.

interface ChildArgs {
  variant: ConsumerVariant;
  topic: string;
  records: number;
  schema: string;
  table: string;
  batchSize: number;
  brokers: string;
  databaseUrl: string;
}

const insertOneSql = (table: string) => `insert into ${table} (k, p, o) values ($1::text, $2::int, $3::bigint)`;
const insertManySql = (table: string) => `insert into ${table} (k, p, o) select * from unnest($1::text[], $2::int[], $3::bigint[])`;

async function child(args: ChildArgs): Promise<void> {
  // The process before it connects anywhere (Node.js, the TypeScript loader, the modules):
  // what of the peak is the variant's own.
  const startRss = process.memoryUsage().rss;
  let peakRss = startRss;
  const sampler = setInterval(() => (peakRss = Math.max(peakRss, process.memoryUsage().rss)), 100);
  const pool = new pg.Pool({ connectionString: args.databaseUrl, max: 12 });
  let first: number | undefined;
  let last = 0;
  let applied = 0;
  const table = `${args.schema}.${args.table}`;
  try {
    if (args.variant.startsWith('eo-')) {
      const perRecord = args.variant === 'eo-per-record';
      const consumer = createConsumer({
        databaseUrl: args.databaseUrl,
        brokers: args.brokers,
        groupId: `bench-${args.table}`,
        topics: [args.topic],
        schema: args.schema,
        batchSize: args.batchSize,
        logger: createLogger({ level: 'error' }),
        ...(perRecord
          ? {
              handler: async (record, tx) => {
                first ??= performance.now();
                await tx.query(insertOneSql(table), [record.key?.toString() ?? null, record.partition, record.offset]);
              },
            }
          : {
              batchHandler: async (records, tx) => {
                first ??= performance.now();
                await tx.query(insertManySql(table), [records.map((r) => r.key?.toString() ?? null), records.map((r) => r.partition), records.map((r) => r.offset)]);
              },
            }),
      });
      const done = new Promise<void>((resolve) =>
        consumer.on('batch', (e) => {
          applied += e.applied + e.skipped;
          last = performance.now();
          if (applied >= args.records) resolve();
        }),
      );
      await consumer.start();
      await withTimeout(done);
      await consumer.stop();
    } else {
      const consumer = new Kafka.KafkaConsumer(
        {
          ...clientProperties({ brokers: args.brokers }),
          'group.id': `bench-${args.table}`,
          'enable.auto.commit': false,
          'isolation.level': 'read_committed',
          'auto.offset.reset': 'earliest',
        } as never,
        {},
      );
      await new Promise<void>((resolve, reject) => consumer.connect({ timeout: 30_000 }, (err) => (err ? reject(err) : resolve())));
      consumer.setDefaultConsumeTimeout(500);
      (consumer as unknown as { setDefaultIsTimeoutOnlyForFirstMessage(v: boolean): void }).setDefaultIsTimeoutOnlyForFirstMessage(true);
      // Assigned, not subscribed: the group join is not what is compared (timing starts at
      // the first record anyway), and offsets are still committed under the group id.
      consumer.assign(Array.from({ length: PARTITIONS }, (_, partition) => ({ topic: args.topic, partition, offset: 0 })));
      const consume = () => new Promise<Message[]>((resolve, reject) => consumer.consume(args.batchSize, (err, m) => (err ? reject(err) : resolve(m ?? []))));
      const deadline = Date.now() + RUN_TIMEOUT_MS;
      while (applied < args.records) {
        if (Date.now() > deadline) throw new Error(`timed out with ${applied} of ${args.records} records`);
        const messages = await consume();
        if (messages.length === 0) continue;
        first ??= performance.now();
        if (args.variant === 'alo-per-record') {
          const client = await pool.connect();
          try {
            await client.query('begin');
            for (const m of messages) await client.query(insertOneSql(table), [m.key?.toString() ?? null, m.partition, m.offset]);
            await client.query('commit');
          } finally {
            client.release();
          }
        } else if (args.variant === 'alo-multi-row') {
          await pool.query(insertManySql(table), [messages.map((m) => m.key?.toString() ?? null), messages.map((m) => m.partition), messages.map((m) => m.offset)]);
        }
        if (args.variant !== 'plain') {
          const next = new Map<string, { topic: string; partition: number; offset: number }>();
          for (const m of messages) next.set(`${m.partition}`, { topic: m.topic, partition: m.partition, offset: m.offset + 1 });
          consumer.commitSync([...next.values()]);
        }
        applied += messages.length;
        last = performance.now();
      }
      await new Promise<void>((resolve) => consumer.disconnect(() => resolve()));
    }
  } finally {
    clearInterval(sampler);
    await pool.end();
  }
  const ms = last - (first ?? last);
  process.stdout.write(`${JSON.stringify({ ms, peakRssMb: peakRss / 2 ** 20, startRssMb: startRss / 2 ** 20 })}\n`);
}

async function withTimeout(promise: Promise<void>): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  try {
    await Promise.race([promise, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error('run timed out')), RUN_TIMEOUT_MS)))]);
  } finally {
    clearTimeout(timer);
  }
}

// ---------------------------------------------------------------------------------------
// The parent: one topic filled once, every variant `repeats` times, interleaved.

function runChild(args: ChildArgs): Promise<{ ms: number; peakRssMb: number; startRssMb: number }> {
  const script = fileURLToPath(import.meta.url);
  // BENCH_NODE_ARGS, e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof", profiles each variant's process.
  const extra = process.env.BENCH_NODE_ARGS?.split(' ').filter(Boolean) ?? [];
  const argv = [...extra, '--import', 'tsx', script, '--child', JSON.stringify(args)];
  return new Promise((resolve, reject) => {
    const proc = spawn(process.execPath, argv, { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    proc.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
    proc.on('error', reject);
    proc.on('exit', (code) => {
      const line = out.trim().split('\n').at(-1);
      if (code !== 0 || !line) reject(new Error(`${args.variant} exited with ${code}`));
      else resolve(JSON.parse(line) as { ms: number; peakRssMb: number; startRssMb: number });
    });
  });
}

export async function fill(brokers: string, topic: string, records: number): Promise<void> {
  const producer = new TransactionalProducer({ connection: { brokers }, transactionalId: `bench-fill-${topic}`, preset: 'throughput' });
  await producer.connect();
  await producer.init(30_000);
  const value = Buffer.from(JSON.stringify({ order: 'x'.repeat(PAYLOAD_BYTES - 12) }));
  try {
    for (let start = 0; start < records; start += PRODUCE_CHUNK) {
      await producer.begin();
      const sends = [];
      for (let i = start; i < Math.min(records, start + PRODUCE_CHUNK); i++) {
        const headers: MessageHeader[] = [{ [HEADER.outboxId]: Buffer.from(String(i + 1)) }, { [HEADER.source]: Buffer.from('bench') }];
        sends.push(producer.produce({ topic, key: `customer-${i % KEYS}`, value, headers }));
      }
      await Promise.all(sends);
      await producer.commit(30_000);
    }
  } finally {
    await producer.disconnect();
  }
}

export async function runConsumerBench(options: {
  databaseUrl: string;
  brokers: string;
  records: number;
  repeats: number;
  batchSize: number;
  variants?: readonly ConsumerVariant[];
  log?: (line: string) => void;
}): Promise<ConsumerBenchResult> {
  const variants = options.variants ?? CONSUMER_VARIANTS;
  const log = options.log ?? ((line: string) => console.log(line));
  const id = randomBytes(4).toString('hex');
  const schema = `bench_consumer_${id}`;
  const topic = `bench-consumer-${id}`;
  const admin = new KafkaAdmin({ brokers: options.brokers });
  const pool = new pg.Pool({ connectionString: options.databaseUrl, max: 2 });
  const runs: ConsumerRun[] = [];
  try {
    await migrate({ db: pool, schema, logger: createLogger({ level: 'error' }) });
    await admin.createTopic({ topic, num_partitions: PARTITIONS, replication_factor: 1 });
    log(`consumer  filling ${topic} with ${options.records} records of ${PAYLOAD_BYTES} B (${KEYS} keys, ${PARTITIONS} partitions)`);
    await fill(options.brokers, topic, options.records);
    for (let repeat = 0; repeat < options.repeats; repeat++) {
      for (const variant of variants) {
        const table = `sink_${variant.replaceAll('-', '_')}_${repeat}`;
        await pool.query(`create table ${schema}.${table} (k text, p int not null, o bigint not null)`);
        const { ms, peakRssMb, startRssMb } = await runChild({ variant, topic, records: options.records, schema, table, batchSize: options.batchSize, brokers: options.brokers, databaseUrl: options.databaseUrl });
        const { rows } = await pool.query<{ n: string; distinct: string }>(`select count(*) as n, count(distinct (p, o)) as distinct from ${schema}.${table}`);
        const written = Number(rows[0]!.n);
        const distinct = Number(rows[0]!.distinct);
        const run: ConsumerRun = {
          variant,
          records: options.records,
          ms,
          recordsPerSec: options.records / (ms / 1000),
          peakRssMb,
          startRssMb,
          duplicates: variant === 'plain' ? 0 : written - distinct,
          missing: variant === 'plain' ? 0 : options.records - distinct,
        };
        runs.push(run);
        log(`consumer  ${variant.padEnd(15)} ${Math.round(run.recordsPerSec).toString().padStart(7)} records/s  RSS ${run.peakRssMb.toFixed(0)} MB (${run.startRssMb.toFixed(0)} at start)  duplicates ${run.duplicates} missing ${run.missing}`);
      }
    }
  } finally {
    await pool.query(`drop schema if exists ${schema} cascade`).catch(() => undefined);
    await admin.deleteTopic(topic).catch(() => undefined);
    await pool.end();
    admin.close();
  }
  const medians = Object.fromEntries(
    variants.map((v) => {
      const mine = runs.filter((r) => r.variant === v);
      return [v, { recordsPerSec: median(mine.map((r) => r.recordsPerSec)), peakRssMb: median(mine.map((r) => r.peakRssMb)) }];
    }),
  ) as ConsumerBenchResult['medians'];
  return {
    records: options.records,
    batchSize: options.batchSize,
    repeats: options.repeats,
    runs,
    medians,
    ratios: {
      eoPerRecordToAloPerRecord: ratio(medians['eo-per-record'], medians['alo-per-record']),
      eoBatchToAloMultiRow: ratio(medians['eo-batch'], medians['alo-multi-row']),
    },
  };
}

// ---------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      child: { type: 'string' },
      records: { type: 'string', default: '100000' },
      repeats: { type: 'string', default: '3' },
      'batch-size': { type: 'string', default: '500' },
      variants: { type: 'string', default: CONSUMER_VARIANTS.join(',') },
    },
  });
  if (values.child) return child(JSON.parse(values.child) as ChildArgs);
  const records = Number(values.records);
  const repeats = Number(values.repeats);
  const batchSize = Number(values['batch-size']);
  for (const [name, v, max] of [['records', records, 10_000_000], ['repeats', repeats, 20], ['batch-size', batchSize, 10_000]] as const) {
    if (!Number.isInteger(v) || v < 1 || v > max) {
      console.error(`consumer-throughput: --${name} must be an integer in 1..${max}`);
      process.exit(2);
    }
  }
  const databaseUrl = process.env.DATABASE_URL;
  const brokers = process.env.KAFKA_BROKERS;
  if (!databaseUrl || !brokers) {
    console.error('consumer-throughput: DATABASE_URL and KAFKA_BROKERS must be set (npm run services:up prints them)');
    process.exit(2);
  }
  const variants = values.variants.split(',') as ConsumerVariant[];
  const unknown = variants.filter((v) => !CONSUMER_VARIANTS.includes(v));
  if (unknown.length > 0) {
    console.error(`consumer-throughput: unknown --variants ${unknown.join(', ')} (known: ${CONSUMER_VARIANTS.join(', ')})`);
    process.exit(2);
  }
  const result = await runConsumerBench({ databaseUrl, brokers, records, repeats, batchSize, variants });
  const m = result.medians;
  console.log(
    `consumer  medians: ${variants.map((v) => `${v} ${Math.round(m[v]!.recordsPerSec)}/s`).join(', ')}; ` +
      `exactly-once / at-least-once: per record ${result.ratios.eoPerRecordToAloPerRecord.toFixed(2)}×, batch handler / multi-row ${result.ratios.eoBatchToAloMultiRow.toFixed(2)}×`,
  );
  await mkdir(new URL('./results/', import.meta.url), { recursive: true });
  const file = new URL(`./results/${new Date().toISOString().replaceAll(':', '-')}-consumer.json`, import.meta.url);
  await writeFile(file, `${JSON.stringify({ machine: { cpus: os.cpus().length, node: process.version }, ...result }, null, 2)}\n`);
  const failed = result.runs.some((r) => r.variant.startsWith('eo-') && (r.duplicates > 0 || r.missing > 0));
  process.exitCode = failed ? 1 : 0;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  main().catch((err: unknown) => {
    console.error(err);
    process.exit(2);
  });
}
