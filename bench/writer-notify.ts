// Writer throughput with and without the relay's wake-up trigger, in one run: many
// concurrent writer transactions, one business row and one outbox row each, as an order
// service commits them. PostgreSQL serialises the commits of transactions that issued
// NOTIFY (a global lock taken at commit), so the trigger could slow writers down; this
// measures by how much, with a relay member that waits for rows (writers notify) and with
// one that is busy (they do not). No relay runs: its member row is written by the bench,
// so only the writers' side is measured.
//
//   DATABASE_URL=... node --import tsx bench/writer-notify.ts [--writers 16] [--seconds 10] [--repeats 3]
import { randomBytes } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import os from 'node:os';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { createRelay, enqueue, migrate, type Relay } from '../src/index.js';
import { KafkaAdmin } from '../src/kafka/admin.js';
import { createLogger } from '../src/log.js';

const { values } = parseArgs({
  options: {
    writers: { type: 'string', default: '16' },
    seconds: { type: 'string', default: '10' },
    repeats: { type: 'string', default: '3' },
    // Also write the JSON result here (bench/run.ts reads it).
    out: { type: 'string' },
  },
});
const WRITERS = Number(values.writers);
const SECONDS = Number(values.seconds);
const REPEATS = Number(values.repeats);
for (const [name, v, max] of [['writers', WRITERS, 256], ['seconds', SECONDS, 600], ['repeats', REPEATS, 20]] as const) {
  if (!Number.isInteger(v) || v < 1 || v > max) {
    console.error(`--${name} must be an integer in 1..${max}`);
    process.exit(2);
  }
}
const databaseUrl = process.env.DATABASE_URL;
if (!databaseUrl) {
  console.error('DATABASE_URL is not set (npm run services:up prints it)');
  process.exit(2);
}

const schema = `bench_writer_${randomBytes(4).toString('hex')}`;
const pool = new pg.Pool({ connectionString: databaseUrl, max: WRITERS + 2 });
const payload = { order: 'x'.repeat(200) };

/** Committed transactions per second of WRITERS concurrent writers over SECONDS. */
async function measure(): Promise<{ txPerSec: number; commitMsP50: number; commitMsP99: number }> {
  const deadline = performance.now() + SECONDS * 1000;
  const commitMs: number[] = [];
  let committed = 0;
  const writer = async (w: number) => {
    const client = await pool.connect();
    try {
      for (let n = 0; performance.now() < deadline; n++) {
        await client.query('begin');
        await client.query(`insert into ${schema}.orders (customer, total) values ($1, $2)`, [`c${w}`, n]);
        await enqueue(client, { topic, key: `c${w}`, payload }, { schema });
        const began = performance.now();
        await client.query('commit');
        commitMs.push(performance.now() - began);
        committed += 1;
      }
    } finally {
      client.release();
    }
  };
  const started = performance.now();
  await Promise.all(Array.from({ length: WRITERS }, (_, w) => writer(w)));
  const elapsed = (performance.now() - started) / 1000;
  commitMs.sort((a, b) => a - b);
  const rank = (q: number) => Math.round((commitMs[Math.max(0, Math.ceil(q * commitMs.length) - 1)] ?? 0) * 100) / 100;
  return { txPerSec: Math.round(committed / elapsed), commitMsP50: rank(0.5), commitMsP99: rank(0.99) };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

type Setting = 'relayBusy' | 'relayIdle' | 'withoutTrigger' | 'liveRelay' | 'liveRelayWithoutTrigger';
const brokers = process.env.KAFKA_BROKERS;
// With brokers, also: a real relay publishing what the writers commit, with the trigger and without it.
const SETTINGS: readonly Setting[] = ['relayBusy', 'relayIdle', 'withoutTrigger', ...(brokers ? (['liveRelay', 'liveRelayWithoutTrigger'] as const) : [])];
const topic = `${schema.replaceAll('_', '-')}-orders`;
let relay: Relay | undefined;

/**
 * `relayIdle`: a relay member waits for rows (its `idle` flag set): every writer
 * transaction notifies. `relayBusy`: the member is draining (flag clear): the trigger runs
 * and looks at the flag, nobody notifies. `withoutTrigger`: the trigger disabled. The
 * `liveRelay` pair: a real relay (defaults) publishes what the writers commit, its member
 * flag set and cleared as it works, with the trigger and without it (the relay then finds
 * rows by its claims and its poll alone); the pair compares the trigger's cost as users
 * meet it, the relay's own work being in both.
 */
async function apply(setting: Setting): Promise<void> {
  if (relay) {
    await relay.stop();
    relay = undefined;
  }
  const live = setting === 'liveRelay' || setting === 'liveRelayWithoutTrigger';
  const withoutTrigger = setting === 'withoutTrigger' || setting === 'liveRelayWithoutTrigger';
  await pool.query(`alter table ${schema}.messages ${withoutTrigger ? 'disable' : 'enable'} trigger messages_notify`);
  await pool.query(`truncate ${schema}.messages, ${schema}.orders`);
  await pool.query(`delete from ${schema}.relay_members`);
  if (live) {
    relay = createRelay({ databaseUrl: databaseUrl!, brokers: brokers!, schema, group: `${schema.replaceAll('_', '-')}-relay`, logger: createLogger({ level: 'error' }), retention: false });
    await relay.start();
  } else {
    // The member row a running relay keeps (its heartbeat writes it), flag as the setting says.
    await pool.query(`insert into ${schema}.relay_members (relay_group, relay_id, idle) values ('bench', 'bench-relay', $1::boolean)`, [setting === 'relayIdle']);
  }
}

try {
  await migrate({ db: pool, schema, logger: createLogger({ level: 'error' }) });
  await pool.query(`create table ${schema}.orders (id bigint generated always as identity primary key, customer text not null, total numeric not null)`);
  if (brokers) {
    const admin = new KafkaAdmin({ brokers });
    try {
      await admin.createTopic({ topic, num_partitions: 6, replication_factor: 1 });
    } finally {
      admin.close();
    }
  }
  const runs = Object.fromEntries(SETTINGS.map((k) => [k, []])) as unknown as Record<Setting, Awaited<ReturnType<typeof measure>>[]>;
  // A warm-up run, not counted; then the settings take turns, each repeat starting with
  // the next one, so that drift of the machine affects all alike.
  await apply('relayIdle');
  await measure();
  for (let r = 0; r < REPEATS; r++) {
    const order = SETTINGS.map((_, i) => SETTINGS[(i + r) % SETTINGS.length]!);
    for (const setting of order) {
      await apply(setting);
      const result = await measure();
      runs[setting].push(result);
      console.log(`${setting.padEnd(15)} run ${r + 1}: ${result.txPerSec} tx/s, COMMIT p50 ${result.commitMsP50} ms p99 ${result.commitMsP99} ms`);
    }
  }
  const medians = Object.fromEntries(SETTINGS.map((k) => [k, median(runs[k].map((r) => r.txPerSec))])) as Record<Setting, number>;
  const round = (x: number) => Math.round(x * 100) / 100;
  const ratio = {
    relayBusy: round(medians.relayBusy / medians.withoutTrigger),
    relayIdle: round(medians.relayIdle / medians.withoutTrigger),
    ...(brokers ? { liveRelay: round(medians.liveRelay / medians.liveRelayWithoutTrigger) } : {}),
  };
  console.log(
    `writers ${WRITERS}: median ${medians.relayBusy} tx/s with the relay busy, ${medians.relayIdle} with it idle (notifying), ${medians.withoutTrigger} without the trigger → ` +
      `ratio busy ${ratio.relayBusy} (target ≥ 0.9), idle ${ratio.relayIdle}` +
      (brokers ? `; with a live relay ${medians.liveRelay} tx/s, ${medians.liveRelayWithoutTrigger} without the trigger → ${ratio.liveRelay}` : ''),
  );
  const result = {
    benchmark: 'writer-notify',
    at: new Date().toISOString(),
    machine: { cpus: os.cpus().length, node: process.version },
    parameters: { writers: WRITERS, seconds: SECONDS, repeats: REPEATS },
    runs,
    medianTxPerSec: medians,
    ratio,
  };
  const dir = new URL('./results/', import.meta.url);
  await mkdir(dir, { recursive: true });
  await writeFile(new URL(`${result.at.replaceAll(':', '-')}-writer-notify.json`, dir), `${JSON.stringify(result, null, 2)}\n`);
  if (values.out) await writeFile(values.out, `${JSON.stringify(result, null, 2)}\n`);
} finally {
  await relay?.stop().catch(() => undefined);
  if (brokers) {
    const admin = new KafkaAdmin({ brokers });
    for (const t of [topic, `outbox-relay.checkpoints.${schema.replaceAll('_', '-')}-relay`]) await admin.deleteTopic(t).catch(() => undefined);
    admin.close();
  }
  await pool.query(`drop schema if exists ${schema} cascade`).catch(() => undefined);
  await pool.end();
}
