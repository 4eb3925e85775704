// The relay's memory and drain rate as users run it: `bin/outbox-relay relay` (the built
// CLI, with the launcher's memory settings) in a process of its own, draining a backlog of
// `--rows` rows of `--payload-bytes` JSON payloads over 64 keys into 6 partitions, once per
// shard count of `--shards`. RSS is read from /proc every 50 ms; the drain rate is the rows
// over the time from the first row's sent_at to the last one's. Every run reads its topic
// back (read_committed) and checks every row arrived exactly once.
//
//   DATABASE_URL=... KAFKA_BROKERS=... node --import tsx bench/relay-memory.ts [--rows 200000] [--shards 4,16] [--payload-bytes 1024] [--out FILE]
//
// Exit code 0 when every run verified exactly-once delivery, 1 when one did not, 2 when a run failed.
import Kafka from '@confluentinc/kafka-javascript';
import { execFileSync, spawn } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { KafkaAdmin } from '../src/kafka/admin.js';
import { migrate } from '../src/index.js';
import { rssMb } from './proc.js';

const { values } = parseArgs({
  options: {
    rows: { type: 'string', default: '200000' },
    shards: { type: 'string', default: '4,16' },
    'payload-bytes': { type: 'string', default: '1024' },
    out: { type: 'string' },
    // npm run bench builds once for both memory benchmarks.
    'no-build': { type: 'boolean', default: false },
  },
});
const ROWS = Number(values.rows);
const SHARDS = values.shards.split(',').map(Number);
const PAYLOAD_BYTES = Number(values['payload-bytes']);
if (!Number.isInteger(ROWS) || ROWS < 1 || SHARDS.some((s) => !Number.isInteger(s) || s < 1 || s > 1024) || !Number.isInteger(PAYLOAD_BYTES) || PAYLOAD_BYTES < 2) {
  console.error('relay-memory: --rows, --shards (comma-separated) and --payload-bytes must be positive integers');
  process.exit(2);
}
const databaseUrl = process.env.DATABASE_URL;
const brokers = process.env.KAFKA_BROKERS;
if (!databaseUrl || !brokers) {
  console.error('relay-memory: DATABASE_URL and KAFKA_BROKERS must be set');
  process.exit(2);
}
const root = fileURLToPath(new URL('..', import.meta.url));
const PARTITIONS = 6;

interface Run {
  shards: number;
  rows: number;
  rowsPerSec: number;
  rssIdleMb: number;
  rssPeakMb: number;
  duplicates: number;
  missing: number;
}

async function readBack(topic: string, expected: number): Promise<Map<string, number>> {
  const consumer = new Kafka.KafkaConsumer(
    { 'bootstrap.servers': brokers, 'group.id': `relay-memory-${process.pid}-${Date.now()}`, 'enable.auto.commit': false, 'isolation.level': 'read_committed' } as never,
    {},
  );
  await new Promise<void>((resolve, reject) => consumer.connect({ timeout: 10_000 }, (err) => (err ? reject(err) : resolve())));
  const counts = new Map<string, number>();
  let read = 0;
  try {
    consumer.assign(Array.from({ length: PARTITIONS }, (_, partition) => ({ topic, partition, offset: 0 })));
    const deadline = Date.now() + 120_000;
    let settle = Infinity;
    while (Date.now() < Math.min(deadline, settle)) {
      const batch = await new Promise<Kafka.Message[]>((resolve, reject) => consumer.consume(1000, (err, m) => (err ? reject(err) : resolve(m))));
      for (const m of batch) {
        const id = m.headers?.find((h) => 'outbox-id' in h)?.['outbox-id']?.toString();
        if (id) counts.set(id, (counts.get(id) ?? 0) + 1);
      }
      read += batch.length;
      if (read >= expected && settle === Infinity) settle = Date.now() + 1_500;
    }
  } finally {
    await new Promise<void>((resolve) => consumer.disconnect(() => resolve()));
  }
  return counts;
}

async function runOnce(pool: pg.Pool, admin: KafkaAdmin, shards: number): Promise<Run> {
  const tag = `${process.pid}_${Date.now().toString(36)}`;
  const schema = `bench_mem_${tag}`;
  const topic = `bench-mem-${tag}`;
  const group = `bench-mem-${tag}`.replaceAll('_', '-');
  await migrate({ db: pool, schema });
  await admin.createTopic({ topic, num_partitions: PARTITIONS, replication_factor: 1 });
  let child: ReturnType<typeof spawn> | undefined;
  try {
    const payload = JSON.stringify({ pad: 'x'.repeat(PAYLOAD_BYTES - 10) });
    for (let done = 0; done < ROWS; done += 10_000) {
      await pool.query(
        `insert into ${schema}.messages (topic, key, payload) select $1::text, 'key-' || (g % 64), convert_to($2::text, 'UTF8') from generate_series(1, $3::int) g`,
        [topic, payload, Math.min(10_000, ROWS - done)],
      );
    }
    child = spawn(`${root}bin/outbox-relay`, ['relay', '--schema', schema, '--group', group, '--shards', String(shards), '--http', 'off'], {
      env: { ...process.env, DATABASE_URL: databaseUrl, KAFKA_BROKERS: brokers, LOG_LEVEL: 'warn' },
      stdio: ['ignore', 'ignore', 'inherit'],
    });
    const pid = child.pid!;
    let peak = 0;
    let idle = 0;
    const sampler = setInterval(() => {
      const r = rssMb(pid);
      peak = Math.max(peak, r);
    }, 50);
    try {
      const deadline = Date.now() + 600_000;
      // Cheap probes (partial indexes), so that polling does not compete with the drain.
      for (;;) {
        const { rows } = await pool.query<{ any_sent: boolean; unsent: boolean }>(
          `select exists (select 1 from ${schema}.messages where state = 'sent') as any_sent,
                  exists (select 1 from ${schema}.messages where state in ('pending', 'failed')) as unsent`,
        );
        if (!rows[0]!.any_sent) idle = rssMb(pid);
        if (!rows[0]!.unsent) break;
        if (Date.now() > deadline || child.exitCode !== null) throw new Error('the relay did not drain');
        await new Promise((resolve) => setTimeout(resolve, 250));
      }
    } finally {
      clearInterval(sampler);
    }
    const { rows: span } = await pool.query<{ s: number }>(`select extract(epoch from max(sent_at) - min(sent_at))::float8 as s from ${schema}.messages`);
    const counts = await readBack(topic, ROWS);
    const { rows: ids } = await pool.query<{ id: string }>(`select id::text from ${schema}.messages`);
    const duplicates = [...counts.values()].filter((n) => n > 1).length;
    const missing = ids.filter((r) => !counts.has(r.id)).length;
    const run: Run = {
      shards,
      rows: ROWS,
      rowsPerSec: Math.round(ROWS / Math.max(0.001, span[0]!.s)),
      rssIdleMb: Math.round(idle),
      rssPeakMb: Math.round(peak),
      duplicates,
      missing,
    };
    console.log(
      `relay-memory  shards ${String(shards).padStart(2)}: ${run.rowsPerSec} rows/s, RSS ${run.rssPeakMb} MB at peak (${run.rssIdleMb} MB before its first batch); duplicates ${duplicates}, missing ${missing}`,
    );
    return run;
  } finally {
    if (child && child.exitCode === null) {
      child.kill('SIGTERM');
      await new Promise((resolve) => child!.once('exit', resolve));
    }
    await pool.query(`drop schema if exists ${schema} cascade`);
    for (const t of [topic, `outbox-relay.checkpoints.${group}`]) await admin.deleteTopic(t).catch(() => undefined);
  }
}

async function main(): Promise<number> {
  console.log(`relay-memory: building the CLI, then ${ROWS} rows of ${PAYLOAD_BYTES} bytes per run, shards ${SHARDS.join(', ')}`);
  if (!values['no-build']) execFileSync('npm', ['run', '--silent', 'build'], { cwd: root, stdio: 'inherit' });
  const pool = new pg.Pool({ connectionString: databaseUrl, max: 4 });
  const admin = new KafkaAdmin({ brokers: brokers! });
  try {
    const runs: Run[] = [];
    for (const shards of SHARDS) runs.push(await runOnce(pool, admin, shards));
    const ok = runs.every((r) => r.duplicates === 0 && r.missing === 0);
    const result = { benchmark: 'relay-memory', ok, at: new Date().toISOString(), parameters: { rows: ROWS, payloadBytes: PAYLOAD_BYTES, partitions: PARTITIONS }, runs };
    const dir = new URL('./results/', import.meta.url);
    await mkdir(dir, { recursive: true });
    await writeFile(new URL(`relay-memory-${result.at.replaceAll(':', '-')}.json`, dir), `${JSON.stringify(result, null, 2)}\n`);
    if (values.out) await writeFile(values.out, JSON.stringify(result));
    return ok ? 0 : 1;
  } finally {
    admin.close();
    await pool.end();
  }
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(`relay-memory: ${(err as Error).stack ?? String(err)}`);
    process.exit(2);
  },
);
