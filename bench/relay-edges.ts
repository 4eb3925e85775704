// Relay benchmark at the edges, on running services:
//   1. big payloads: bytes the relay's claims read from PostgreSQL per byte published, and
//      the relay's peak RSS against its bound (maxBatchBytes × shards + the process's own);
//   2. claim cost with a blocked backlog: claim latency of the relay's own claim statement
//      with no blocked rows and with --blocked rows queued behind one dead row.
// Everything it creates is fresh per run and removed at the end. Results: bench/results/.
//
//   DATABASE_URL=postgres://... KAFKA_BROKERS=host:port \
//     node --expose-gc --import tsx bench/relay-edges.ts [--big-rows N] [--big-bytes N] [--max-batch-bytes N] [--blocked N] [--claims N]
//
// Exit code: 0 when both targets hold (bytes read ≤ 1.2× published; claim p99 with the
// blocked backlog within 2× of without), 1 when one does not, 2 when the run failed.
import { randomBytes } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import os from 'node:os';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { createLogger, createRelay, migrate } from '../src/index.js';
import { KafkaAdmin } from '../src/kafka/admin.js';
import { quoteSchema } from '../src/db/identifiers.js';
import { CLAIM_PLAN_SETTINGS, claimBatchSql } from '../src/sql/outbox-claim.js';

const { values } = parseArgs({
  options: {
    'big-rows': { type: 'string', default: '200' },
    'big-bytes': { type: 'string', default: '900000' },
    blocked: { type: 'string', default: '1000000' },
    claims: { type: 'string', default: '300' },
    'max-batch-bytes': { type: 'string', default: String(16 * 1024 * 1024) },
  },
});
const int = (name: string, raw: string) => {
  const n = Number(raw);
  if (!Number.isInteger(n) || n <= 0) {
    console.error(`relay-edges: --${name} must be a positive integer, got ${raw}`);
    process.exit(2);
  }
  return n;
};
const params = {
  bigRows: int('big-rows', values['big-rows']),
  bigBytes: int('big-bytes', values['big-bytes']),
  blocked: int('blocked', values.blocked),
  claims: int('claims', values.claims),
  shards: 4,
  batchSize: 500,
  maxBatchBytes: int('max-batch-bytes', values['max-batch-bytes']),
};
const databaseUrl = process.env.DATABASE_URL;
const brokers = process.env.KAFKA_BROKERS;
if (!databaseUrl || !brokers) {
  console.error('relay-edges: DATABASE_URL and KAFKA_BROKERS must be set');
  process.exit(2);
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
const mib = (bytes: number) => Math.round((bytes / 1024 / 1024) * 10) / 10;

function percentiles(values: number[]) {
  const sorted = [...values].sort((a, b) => a - b);
  const rank = (q: number) => Math.round(sorted[Math.max(0, Math.ceil(q * sorted.length) - 1)]! * 100) / 100;
  return { count: sorted.length, p50: rank(0.5), p99: rank(0.99), max: rank(1) };
}

const id = randomBytes(4).toString('hex');
const pool = new pg.Pool({ connectionString: databaseUrl, max: 12 });
const admin = new KafkaAdmin({ brokers });
const schemas: string[] = [];
const topics: string[] = [];

async function freshSchema(name: string): Promise<string> {
  const schema = `bench_${id}_${name}`;
  schemas.push(schema);
  await migrate({ db: databaseUrl!, schema, logger: createLogger({ level: 'error' }) });
  return schema;
}

/**
 * Scenario 1. The relay gets a pool whose results are counted: every payload byte its
 * claims bring back from PostgreSQL, against the payload bytes of the rows it published.
 */
async function bigPayloads() {
  const schema = await freshSchema('big');
  const q = quoteSchema(schema);
  const topic = `bench-${id}-big`;
  topics.push(topic);
  // Records up to 1 MB: the topic must take them whole.
  await admin.createTopic({ topic, num_partitions: 6, replication_factor: 1, config: { 'max.message.bytes': '2000000' } });
  for (let i = 0; i < params.bigRows; i += 10) {
    const n = Math.min(10, params.bigRows - i);
    await pool.query(
      `insert into ${q}.messages (topic, key, payload) select $1, 'k' || (i % 64), $2::bytea from generate_series(1, $3::int) i`,
      [topic, randomBytes(params.bigBytes), n],
    );
  }
  const relayPool = new pg.Pool({ connectionString: databaseUrl, max: params.shards + 4, options: '-c jit=off' });
  let bytesRead = 0;
  // Every statement of the relay, on any of its connections.
  relayPool.on('connect', (client) => {
    const query = client.query.bind(client) as (...args: unknown[]) => Promise<pg.QueryResult>;
    (client as unknown as { query: unknown }).query = async (...args: unknown[]) => {
      const result = await query(...args);
      for (const row of result?.rows ?? []) if (Buffer.isBuffer(row.payload)) bytesRead += row.payload.length;
      return result;
    };
  });
  global.gc?.();
  const baseline = process.memoryUsage().rss;
  let peak = baseline;
  const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 50);
  const relay = createRelay({
    pool: relayPool,
    brokers: brokers!,
    schema,
    group: `bench-${id}-big`,
    shards: params.shards,
    batchSize: params.batchSize,
    maxBatchBytes: params.maxBatchBytes,
    retention: false,
    kafka: { properties: { 'message.max.bytes': 1_000_000 } },
    logger: createLogger({ level: process.env.LOG_LEVEL ?? 'error' }),
  });
  const started = Date.now();
  await relay.start();
  for (;;) {
    const { rows } = await pool.query(`select count(*)::int as n from ${q}.messages where state <> 'sent'`);
    if (rows[0].n === 0) break;
    if (Date.now() - started > 10 * 60_000) throw new Error('big-payload drain did not finish in 10 minutes');
    await sleep(100);
  }
  const seconds = (Date.now() - started) / 1000;
  await relay.stop();
  clearInterval(sampler);
  await relayPool.end();
  const { rows } = await pool.query(`select coalesce(sum(octet_length(payload)), 0)::bigint as bytes from ${q}.messages where state = 'sent'`);
  const published = Number(rows[0].bytes);
  const bound = params.maxBatchBytes * params.shards;
  return {
    rows: params.bigRows,
    payloadBytes: params.bigBytes,
    publishedMiB: mib(published),
    readMiB: mib(bytesRead),
    readPerPublished: Math.round((bytesRead / published) * 100) / 100,
    target: '≤ 1.2',
    rssBaselineMiB: mib(baseline),
    rssPeakMiB: mib(peak),
    rssGrowthMiB: mib(peak - baseline),
    maxBatchBytesTimesShardsMiB: mib(bound),
    rssGrowthPerBatchBytesInFlight: Math.round(((peak - baseline) / bound) * 100) / 100,
    seconds: Math.round(seconds * 10) / 10,
    mibPerSec: Math.round((mib(published) / seconds) * 10) / 10,
  };
}

/**
 * Scenario 2. The relay's claim statement, run as a shard worker runs it, each claim in a
 * transaction rolled back so that every measured claim sees the same rows.
 */
async function blockedBacklog() {
  const shards = params.shards;
  const args = (shard: number) => [shards, shard, params.batchSize, params.batchSize, params.maxBatchBytes];
  const normalRows = (q: string) =>
    pool.query(
      `insert into ${q}.messages (topic, key, payload) select 'bench', 'k' || (i % 64), convert_to(repeat('x', 200), 'UTF8') from generate_series(1, 50000) i`,
    );
  const { rows: keyShard } = await pool.query(`select (hashtext('blocked') & 2147483647) % $1::int as shard`, [shards]);
  const blockedShard = keyShard[0].shard as number;
  const otherShard = (blockedShard + 1) % shards;
  const client = await pool.connect();
  const claim = async (q: string, shard: number) => {
    await client.query(`begin; ${CLAIM_PLAN_SETTINGS}`);
    const t0 = process.hrtime.bigint();
    const { rows } = await client.query(claimBatchSql(q), args(shard));
    return { ms: Number(process.hrtime.bigint() - t0) / 1e6, rows };
  };
  const measure = async (q: string, shard: number) => {
    const times: number[] = [];
    for (let i = 0; i < params.claims; i += 1) {
      const { ms } = await claim(q, shard);
      times.push(ms);
      await client.query('rollback'); // every measured claim sees the same rows
    }
    return percentiles(times);
  };
  try {
    await client.query('set jit = off');
    // Without: 50,000 publishable rows over 64 keys.
    const plain = quoteSchema(await freshSchema('plain'));
    await normalRows(plain);
    await pool.query(`vacuum analyze ${plain}.messages`);
    const without = { blockedShard: await measure(plain, blockedShard), otherShard: await measure(plain, otherShard) };

    // With: one dead row, the backlog behind it, then the same 50,000 rows: in id order
    // every claim would have to pass the backlog first.
    const q = quoteSchema(await freshSchema('blocked'));
    await pool.query(`insert into ${q}.messages (topic, key, payload, state, attempts, last_error) values ('bench', 'blocked', 'x', 'dead', 10, 'bench')`);
    for (let done = 0; done < params.blocked; done += 100_000) {
      await pool.query(
        `insert into ${q}.messages (topic, key, payload) select 'bench', 'blocked', convert_to(repeat('x', 200), 'UTF8') from generate_series(1, $1::int)`,
        [Math.min(100_000, params.blocked - done)],
      );
    }
    await normalRows(q);
    await pool.query(`vacuum analyze ${q}.messages`);
    // The shard worker's first claims hold the backlog, a batch's worth each, one after the other.
    const holding: number[] = [];
    for (;;) {
      const { ms, rows } = await claim(q, blockedShard);
      await client.query('commit');
      holding.push(ms);
      if ((rows[0]?.held ?? 0) === 0) break;
    }
    const { rows: held } = await pool.query(`select count(*)::int as n from ${q}.messages where held`);
    // What autovacuum does soon after a bulk update; measured after it, as steady state.
    await pool.query(`vacuum analyze ${q}.messages`);
    const withBlocked = { blockedShard: await measure(q, blockedShard), otherShard: await measure(q, otherShard) };
    const ratio = Math.max(withBlocked.blockedShard.p99 / without.blockedShard.p99, withBlocked.otherShard.p99 / without.otherShard.p99);
    return {
      publishable: 50_000,
      blockedRows: params.blocked,
      heldRows: held[0].n,
      holdingClaims: { ...percentiles(holding), totalSeconds: Math.round(holding.reduce((a, b) => a + b, 0) / 100) / 10 },
      claimMsWithout: without,
      claimMsWithBlocked: withBlocked,
      p99Ratio: Math.round(ratio * 100) / 100,
      target: '≤ 2',
    };
  } finally {
    client.release();
  }
}

async function cleanUp(): Promise<void> {
  for (const schema of schemas) await pool.query(`drop schema if exists ${quoteSchema(schema)} cascade`).catch(() => undefined);
  for (const topic of [...topics, `outbox-relay.checkpoints.bench-${id}-big`]) await admin.deleteTopic(topic).catch(() => undefined);
  admin.close();
  await pool.end();
}

let code = 2;
try {
  const big = await bigPayloads();
  console.log('big payloads', big);
  const blocked = await blockedBacklog();
  console.log('blocked backlog', JSON.stringify(blocked, null, 2));
  const result = {
    bench: 'relay-edges',
    at: new Date().toISOString(),
    machine: { cpus: os.cpus().length, memGiB: Math.round(os.totalmem() / 2 ** 30) },
    params,
    bigPayloads: big,
    blockedBacklog: blocked,
  };
  await mkdir(new URL('./results/', import.meta.url), { recursive: true });
  const file = new URL(`./results/relay-edges-${result.at.replaceAll(':', '-')}.json`, import.meta.url);
  await writeFile(file, `${JSON.stringify(result, null, 2)}\n`);
  console.log(`written ${file.pathname}`);
  code = big.readPerPublished <= 1.2 && blocked.p99Ratio <= 2 ? 0 : 1;
} catch (err) {
  console.error('relay-edges failed:', err);
} finally {
  await cleanUp();
}
process.exit(code);
