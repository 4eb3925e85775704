// The whole product end to end on local services: an order service writes an order row and
// its outbox row in ONE transaction at a steady rate; the relay publishes them exactly once
// (its HTTP surface on a printed address); the finance consumer writes a ledger entry and a
// balance per record, with its offsets, in PostgreSQL; a read_committed reader counts what
// reached Kafka. One poison event (to a topic that does not exist yet) goes dead, shows in
// `outbox-relay status`, and is repaired with `outbox-relay retry` during the run. Ends with
// a consistency line.
//
//   npm run demo [-- --orders 2000 --rate 400 --hold 60]
//
// The relay's dashboard is served at the printed address (port 9464 when it is free);
// `--hold S` keeps it up S seconds after the consistency line.
import Kafka from '@confluentinc/kafka-javascript';
import type { Message } from '@confluentinc/kafka-javascript';
import { execFile } from 'node:child_process';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import { parseArgs, promisify } from 'node:util';
import pg from 'pg';
import { createConsumer } from '../src/consumer/index.js';
import { createLogger, createRelay, DEFAULT_HTTP_PORT, enqueue, migrate, serveRelayHttp } from '../src/index.js';
import { KafkaAdmin } from '../src/kafka/admin.js';

const { values } = (() => {
  try {
    return parseArgs({
      options: { orders: { type: 'string', default: '2000' }, rate: { type: 'string', default: '400' }, hold: { type: 'string', default: '0' } },
    });
  } catch (err) {
    console.error(`demo: ${(err as Error).message} (flags: --orders N --rate N --hold S)`);
    process.exit(2);
  }
})();
/** A whole number in min..max from a flag, or exit 2 with what was wrong. */
function wholeNumber(name: string, text: string, min: number, max: number): number {
  const n = /^\d{1,9}$/.test(text) ? Number(text) : NaN;
  if (!(n >= min && n <= max)) {
    console.error(`demo: --${name} must be a whole number in ${min}..${max}, got ${JSON.stringify(text)}`);
    process.exit(2);
  }
  return n;
}
const ORDERS = wholeNumber('orders', values.orders, 1, 1_000_000);
const RATE = wholeNumber('rate', values.rate, 1, 100_000); // orders per second
const HOLD_SECONDS = wholeNumber('hold', values.hold, 0, 86_400);
/** How long the on-call repair may take, and the wait for every record after the writer ends. */
const REPAIR_DEADLINE_MS = 120_000;
const databaseUrl = process.env.DATABASE_URL!;
const brokers = process.env.KAFKA_BROKERS!;
const run = Date.now().toString(36);
const topic = `demo-orders-${run}`;
const logger = createLogger({ level: process.env.LOG_LEVEL ?? 'error' });

const pool = new pg.Pool({ connectionString: databaseUrl, max: 8 });
await migrate({ db: pool, logger });
await pool.query(`create schema if not exists demo_shop`);
await pool.query(`create table if not exists demo_shop.orders (
  id bigint generated always as identity primary key, customer text not null, total numeric(10,2) not null, created_at timestamptz not null default now())`);
// The finance side: one ledger entry per order event, and a balance per customer.
await pool.query(`create schema if not exists demo_finance`);
await pool.query(`create table if not exists demo_finance.ledger (
  run text not null, outbox_id text not null, customer text not null, amount numeric(10,2) not null, primary key (run, outbox_id))`);
await pool.query(`create table if not exists demo_finance.balances (
  run text not null, customer text not null, total numeric(12,2) not null, primary key (run, customer))`);
const poisonTopic = `${topic}-audit`;

const admin = new KafkaAdmin({ brokers });
await admin.createTopic({ topic, num_partitions: 3, replication_factor: 1 });
admin.close();
console.log(`demo: topic ${topic}, ${ORDERS} orders at ${RATE}/s`);

// A fresh group per run (one group serves an outbox at a time: take over from the last one).
const { rows: serving } = await pool.query(`select relay_group from outbox.relay_groups where active`);
const relay = createRelay({
  databaseUrl,
  brokers,
  logger,
  group: `demo-${run}`,
  shards: 4,
  takeOverFrom: serving[0]?.relay_group,
  maxAttempts: 2,
  rowBackoff: { minMs: 200, maxMs: 500 },
});
await relay.start();
// The relay's usual port when it is free, any port otherwise.
const http = await serveRelayHttp(relay, { host: '127.0.0.1', port: DEFAULT_HTTP_PORT }, logger).catch(() =>
  serveRelayHttp(relay, { host: '127.0.0.1', port: 0 }, logger),
);
const httpBase = `http://127.0.0.1:${(http.address() as AddressInfo).port}`;
console.log(`demo: dashboard at ${httpBase}/ (and /healthz /readyz /metrics /api/status /api/stuck)`);

const consumer = createConsumer({
  databaseUrl,
  brokers,
  groupId: `demo-finance-${run}`,
  topics: [topic],
  fromBeginning: true,
  logger,
  handler: async (record, tx) => {
    const event = JSON.parse(record.value!.toString()) as { customer: string; total: string };
    await tx.query(`insert into demo_finance.ledger (run, outbox_id, customer, amount) values ($1, $2, $3, $4)`, [run, record.headers.outboxId, event.customer, event.total]);
    await tx.query(
      `insert into demo_finance.balances (run, customer, total) values ($1, $2, $3)
       on conflict (run, customer) do update set total = demo_finance.balances.total + excluded.total`,
      [run, event.customer, event.total],
    );
  },
});
await consumer.start();

const cli = promisify(execFile);
const root = fileURLToPath(new URL('..', import.meta.url));
const outboxRelay = (...args: string[]) => cli(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', ...args], { cwd: root, env: { ...process.env, LOG_LEVEL: 'silent' } });

// The reader: read_committed, every partition from the start.
const received = new Map<string, number>();
const latencies: number[] = [];
const reader = new Kafka.KafkaConsumer(
  { 'bootstrap.servers': brokers, 'group.id': `demo-reader-${run}`, 'enable.auto.commit': false, 'isolation.level': 'read_committed', 'fetch.wait.max.ms': 10 } as never,
  {},
);
await new Promise<void>((resolve, reject) => reader.connect({ timeout: 10_000 }, (err) => (err ? reject(err) : resolve())));
// A consume call returns as soon as one record is there: its return time is its records' arrival.
reader.setDefaultConsumeTimeout(100);
(reader as unknown as { setDefaultIsTimeoutOnlyForFirstMessage(v: boolean): void }).setDefaultIsTimeoutOnlyForFirstMessage(true);
/** When each order's transaction COMMIT returned, by outbox id: latency runs from there. */
const committedAt = new Map<string, number>();
reader.assign([0, 1, 2].map((partition) => ({ topic, partition, offset: 0 })));
let reading = true;
const readLoop = (async () => {
  while (reading) {
    const batch = await new Promise<Message[]>((resolve, reject) => reader.consume(500, (err, m) => (err ? reject(err) : resolve(m))));
    for (const m of batch) {
      const header = (name: string) => m.headers?.find((h) => name in h)?.[name]?.toString();
      const id = header('outbox-id')!;
      received.set(id, (received.get(id) ?? 0) + 1);
      const committed = committedAt.get(id);
      if (committed !== undefined && received.get(id) === 1) latencies.push(Math.round(performance.now() - committed));
    }
  }
})();

// The order service: each order row and its event commit together.
let written = 0;
let poisonId: string | undefined;
const started = Date.now();
const writer = (async () => {
  while (written < ORDERS) {
    const due = Math.min(ORDERS, Math.floor(((Date.now() - started) / 1000) * RATE) + 1);
    while (written < due) {
      const client = await pool.connect();
      try {
        await client.query('begin');
        const customer = `customer-${written % 50}`;
        const total = (10 + (written % 90)).toFixed(2);
        const { rows } = await client.query(`insert into demo_shop.orders (customer, total) values ($1, $2) returning id`, [customer, total]);
        const [orderEvent] = await enqueue(client, {
          topic,
          key: customer,
          payload: { orderId: rows[0].id, customer, total },
          eventType: 'OrderPlaced',
          aggregateType: 'order',
          aggregateId: String(rows[0].id),
        });
        if (written === Math.floor(ORDERS / 4)) {
          // The poison event: its topic does not exist yet, so it fails and goes dead.
          poisonId = (await enqueue(client, { topic: poisonTopic, key: customer, payload: { orderId: rows[0].id, audit: true } }))[0];
        }
        await client.query('commit');
        committedAt.set(orderEvent!, performance.now());
        written += 1;
      } finally {
        client.release();
      }
    }
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
})();

const ledgerCountOrZero = async () => (await pool.query(`select count(*)::int as n from demo_finance.ledger where run = $1`, [run]).catch(() => ({ rows: [{ n: 0 }] }))).rows[0].n as number;
const progress = setInterval(() => {
  const sorted = [...latencies].sort((a, b) => a - b);
  const p = (q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? 0;
  void ledgerCountOrZero().then((ledger) =>
    console.log(`written=${written} in Kafka=${received.size} ledger=${ledger} commit→read p50=${p(0.5)}ms p99=${p(0.99)}ms`),
  );
}, 1000);

/** Polls `check` every 100 ms until it holds; false when `deadline` passed first. */
async function until(check: () => Promise<boolean> | boolean, deadline: number): Promise<boolean> {
  for (;;) {
    if (await check()) return true;
    if (Date.now() > deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}
const poisonState = async () => (await pool.query(`select state from outbox.messages where id = $1`, [poisonId])).rows[0]?.state as string | undefined;

// On-call: the poison row shows up dead in status; create its topic, then retry it. A step
// that fails or overruns is reported, and the run ends INCONSISTENT instead of hanging.
let repairProblem: string | undefined;
const repair = (async () => {
  const deadline = Date.now() + REPAIR_DEADLINE_MS;
  if (!(await until(() => poisonId !== undefined, deadline))) throw new Error('the poison event was never written');
  if (!(await until(async () => (await poisonState()) === 'dead', deadline))) throw new Error(`row ${poisonId} did not go dead (it is ${await poisonState()})`);
  const status = JSON.parse((await outboxRelay('status', '--json')).stdout) as { verdict: string; reason: string };
  console.log(`on-call: outbox-relay status → ${status.verdict}: ${status.reason}`);
  const listed = (await (await fetch(`${httpBase}/api/stuck?state=dead&olderThan=0s`)).json()) as { rows: Array<{ id: string; heldBack: string }> };
  const shown = listed.rows.find((r) => r.id === poisonId);
  console.log(`on-call: the dashboard's stuck list shows row ${poisonId} ${shown ? `dead (${shown.heldBack})` : 'NOT (unexpected)'}`);
  const admin2 = new KafkaAdmin({ brokers });
  try {
    await admin2.createTopic({ topic: poisonTopic, num_partitions: 1, replication_factor: 1 });
  } finally {
    admin2.close();
  }
  const retried = await outboxRelay('retry', poisonId!, '--reason', 'demo: audit topic created', '--actor', 'demo');
  console.log(`on-call: outbox-relay retry ${poisonId} → ${retried.stdout.trim().split('\n').at(-1)}`);
  if (!(await until(async () => (await poisonState()) === 'sent', deadline))) throw new Error(`row ${poisonId} was not sent after the retry (it is ${await poisonState()})`);
  console.log(`on-call: row ${poisonId} sent after the repair`);
})().catch((err: unknown) => {
  repairProblem = err instanceof Error ? err.message : String(err);
  console.error(`on-call: the repair failed: ${repairProblem}`);
});

await writer;
await repair;
const ledgerCount = async () => (await pool.query(`select count(*)::int as n from demo_finance.ledger where run = $1`, [run])).rows[0].n as number;
await until(async () => received.size >= written && (await ledgerCount()) >= written, Date.now() + 60_000);
// Keep reading a little longer so that a duplicate would be seen.
await new Promise((resolve) => setTimeout(resolve, 1500));
reading = false;
await readLoop;
clearInterval(progress);
await consumer.stop();
if (HOLD_SECONDS > 0) {
  console.log(`demo: the dashboard stays up at ${httpBase}/ for ${HOLD_SECONDS} s`);
  await new Promise((resolve) => setTimeout(resolve, HOLD_SECONDS * 1000));
}
http.closeAllConnections();
await new Promise((resolve) => http.close(resolve));
await relay.stop();
await new Promise<void>((resolve) => reader.disconnect(() => resolve()));
const { rows } = await pool.query(`select count(*)::int as n from outbox.messages where topic = $1 and state = 'sent'`, [topic]);
const { rows: ledger } = await pool.query(
  `select count(*)::int as entries, count(distinct outbox_id)::int as distinct_ids,
          (select coalesce(sum(total), 0) from demo_finance.balances where run = $1)::text as balances,
          coalesce(sum(amount), 0)::text as amounts
     from demo_finance.ledger where run = $1`,
  [run],
);
const { rows: poison } = await pool.query(`select state from outbox.messages where id = $1`, [poisonId]);
await pool.end();

const duplicates = [...received.values()].filter((n) => n > 1).length;
const missing = written - received.size;
const l = ledger[0];
const ledgerOk = l.entries === written && l.distinct_ids === written && l.balances === l.amounts;
const ok = duplicates === 0 && missing === 0 && rows[0].n === written && ledgerOk && poison[0]?.state === 'sent' && repairProblem === undefined;
const sorted = [...latencies].sort((a, b) => a - b);
console.log(`latency commit→read: p50=${sorted[Math.floor(sorted.length / 2)] ?? 0}ms p99=${sorted[Math.floor(sorted.length * 0.99)] ?? 0}ms`);
console.log(
  `orders written=${written} records in Kafka=${received.size} marked sent=${rows[0].n} ledger entries=${l.entries} ` +
    `(balances ${l.balances} = entries ${l.amounts}) poison row ${poison[0]?.state} duplicates=${duplicates} missing=${missing} → ${ok ? 'CONSISTENT' : 'INCONSISTENT'}`,
);
process.exit(ok ? 0 : 1);
