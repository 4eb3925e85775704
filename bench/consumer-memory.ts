// The exactly-once consumer's memory as an application runs it: the built package in a
// plain Node.js process of its own (bench/consumer-memory-child.mjs), applying `--records`
// records of 1 KiB (64 keys, 6 partitions) with a one-insert-per-record `handler` and with a
// multi-row `batchHandler`, each with the launcher's memory settings (MALLOC_ARENA_MAX=2,
// --max-semi-space-size=2: see bin/outbox-relay) and with Node.js and glibc defaults. RSS is
// read from /proc every 50 ms. Every run checks that each record's effect was written once.
//
//   DATABASE_URL=... KAFKA_BROKERS=... node --import tsx bench/consumer-memory.ts [--records 50000] [--out FILE]
//
// Exit code 0 when every run wrote each effect exactly once, 1 when one did not, 2 when a run failed.
import { execFileSync, spawn } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { KafkaAdmin } from '../src/kafka/admin.js';
import { migrate } from '../src/index.js';
import { rssMb } from './proc.js';
import { fill } from './consumer-throughput.js';

const { values } = parseArgs({ options: { records: { type: 'string', default: '50000' }, out: { type: 'string' }, 'no-build': { type: 'boolean', default: false } } });
const RECORDS = Number(values.records);
if (!Number.isInteger(RECORDS) || RECORDS < 1 || RECORDS > 10_000_000) {
  console.error('consumer-memory: --records must be an integer in 1..10000000');
  process.exit(2);
}
const databaseUrl = process.env.DATABASE_URL;
const brokers = process.env.KAFKA_BROKERS;
if (!databaseUrl || !brokers) {
  console.error('consumer-memory: DATABASE_URL and KAFKA_BROKERS must be set');
  process.exit(2);
}
const root = fileURLToPath(new URL('..', import.meta.url));
const KINDS = ['handler', 'batchHandler'] as const;
const SETTINGS = { launcher: { env: { MALLOC_ARENA_MAX: '2' }, nodeArgs: ['--max-semi-space-size=2'] }, defaults: { env: {}, nodeArgs: [] } } as const;

interface Run {
  kind: (typeof KINDS)[number];
  settings: keyof typeof SETTINGS;
  recordsPerSec: number;
  rssPeakMb: number;
  duplicates: number;
  missing: number;
}

async function runChild(args: Record<string, unknown>, settings: (typeof SETTINGS)[keyof typeof SETTINGS]): Promise<{ ms: number; peak: number }> {
  const env: Record<string, string | undefined> = { ...process.env, ...settings.env };
  if (!('MALLOC_ARENA_MAX' in settings.env)) delete env.MALLOC_ARENA_MAX;
  const child = spawn(process.execPath, [...settings.nodeArgs, `${root}bench/consumer-memory-child.mjs`, JSON.stringify(args)], { env, stdio: ['ignore', 'pipe', 'inherit'] });
  let peak = 0;
  const sampler = setInterval(() => (peak = Math.max(peak, rssMb(child.pid!))), 50);
  let out = '';
  child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
  const code = await new Promise<number>((resolve) => child.on('exit', (c) => resolve(c ?? 2)));
  clearInterval(sampler);
  if (code !== 0) throw new Error(`the consumer process exited with ${code}`);
  return { ms: (JSON.parse(out.trim().split('\n').at(-1)!) as { ms: number }).ms, peak };
}

async function main(): Promise<number> {
  console.log(`consumer-memory: building the package, then ${RECORDS} records per run`);
  if (!values['no-build']) execFileSync('npm', ['run', '--silent', 'build'], { cwd: root, stdio: 'inherit' });
  const tag = `${process.pid}_${Date.now().toString(36)}`;
  const schema = `bench_cmem_${tag}`;
  const topic = `bench-cmem-${tag}`;
  const pool = new pg.Pool({ connectionString: databaseUrl, max: 2 });
  const admin = new KafkaAdmin({ brokers: brokers! });
  const runs: Run[] = [];
  try {
    await migrate({ db: pool, schema });
    await admin.createTopic({ topic, num_partitions: 6, replication_factor: 1 });
    await fill(brokers!, topic, RECORDS);
    for (const settings of Object.keys(SETTINGS) as (keyof typeof SETTINGS)[]) {
      for (const kind of KINDS) {
        const table = `sink_${kind.toLowerCase()}_${settings}`;
        await pool.query(`create table ${schema}.${table} (k text, p int not null, o bigint not null)`);
        const { ms, peak } = await runChild({ kind, topic, records: RECORDS, schema, table, brokers, databaseUrl }, SETTINGS[settings]);
        const { rows } = await pool.query<{ n: string; distinct: string }>(`select count(*) as n, count(distinct (p, o)) as distinct from ${schema}.${table}`);
        const run: Run = {
          kind,
          settings,
          recordsPerSec: Math.round(RECORDS / (ms / 1000)),
          rssPeakMb: Math.round(peak),
          duplicates: Number(rows[0]!.n) - Number(rows[0]!.distinct),
          missing: RECORDS - Number(rows[0]!.distinct),
        };
        runs.push(run);
        console.log(
          `consumer-memory  ${kind.padEnd(12)} ${settings.padEnd(8)} ${run.recordsPerSec} records/s, RSS ${run.rssPeakMb} MB at peak; duplicates ${run.duplicates}, missing ${run.missing}`,
        );
      }
    }
  } finally {
    await pool.query(`drop schema if exists ${schema} cascade`).catch(() => undefined);
    await admin.deleteTopic(topic).catch(() => undefined);
    admin.close();
    await pool.end();
  }
  const ok = runs.every((r) => r.duplicates === 0 && r.missing === 0);
  const result = { benchmark: 'consumer-memory', ok, at: new Date().toISOString(), parameters: { records: RECORDS }, runs };
  const dir = new URL('./results/', import.meta.url);
  await mkdir(dir, { recursive: true });
  await writeFile(new URL(`consumer-memory-${result.at.replaceAll(':', '-')}.json`, dir), `${JSON.stringify(result, null, 2)}\n`);
  if (values.out) await writeFile(values.out, JSON.stringify(result));
  return ok ? 0 : 1;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(`consumer-memory: ${(err as Error).stack ?? String(err)}`);
    process.exit(2);
  },
);
