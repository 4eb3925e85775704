// The main job end to end on local services: an order service writes an order row and its
// outbox row in ONE transaction at a steady rate; the relay publishes them exactly once; a
// read_committed reader counts what arrived. Ends with a consistency line.
//
//   npm run demo [-- --orders 2000 --rate 400]
import Kafka from '@confluentinc/kafka-javascript';
import type { Message } from '@confluentinc/kafka-javascript';
import { parseArgs } from 'node:util';
import pg from 'pg';
import { createLogger, createRelay, enqueue, migrate } from '../src/index.js';
import { KafkaAdmin } from '../src/kafka/admin.js';

const { values } = parseArgs({ options: { orders: { type: 'string', default: '2000' }, rate: { type: 'string', default: '400' } } });
const ORDERS = Number(values.orders);
const RATE = Number(values.rate); // orders per second
const databaseUrl = process.env.DATABASE_URL!;
const brokers = process.env.KAFKA_BROKERS!;
const run = Date.now().toString(36);
const topic = `demo-orders-${run}`;
const logger = createLogger({ level: process.env.LOG_LEVEL ?? 'warn' });

const pool = new pg.Pool({ connectionString: databaseUrl, max: 8 });
await migrate({ db: pool, logger });
await pool.query(`create schema if not exists demo_shop`);
await pool.query(`create table if not exists demo_shop.orders (
  id bigint generated always as identity primary key, customer text not null, total numeric(10,2) not null, created_at timestamptz not null default now())`);

const admin = new KafkaAdmin({ brokers });
await admin.createTopic({ topic, num_partitions: 3, replication_factor: 1 });
admin.close();
console.log(`demo: topic ${topic}, ${ORDERS} orders at ${RATE}/s`);

const relay = createRelay({ databaseUrl, brokers, logger, group: `demo-${run}`, shards: 4 });
await relay.start();

// The reader: read_committed, every partition from the start.
const received = new Map<string, number>();
const latencies: number[] = [];
const reader = new Kafka.KafkaConsumer(
  { 'bootstrap.servers': brokers, 'group.id': `demo-reader-${run}`, 'enable.auto.commit': false, 'isolation.level': 'read_committed', 'fetch.wait.max.ms': 10 } as never,
  {},
);
await new Promise<void>((resolve, reject) => reader.connect({ timeout: 10_000 }, (err) => (err ? reject(err) : resolve())));
// Hand over whatever has arrived after at most 10 ms instead of waiting to fill a batch.
reader.setDefaultConsumeTimeout(10);
reader.assign([0, 1, 2].map((partition) => ({ topic, partition, offset: 0 })));
let reading = true;
const readLoop = (async () => {
  while (reading) {
    const batch = await new Promise<Message[]>((resolve, reject) => reader.consume(500, (err, m) => (err ? reject(err) : resolve(m))));
    for (const m of batch) {
      const header = (name: string) => m.headers?.find((h) => name in h)?.[name]?.toString();
      const id = header('outbox-id')!;
      received.set(id, (received.get(id) ?? 0) + 1);
      latencies.push(Date.now() - new Date(header('created-at')!).getTime());
    }
  }
})();

// The order service: each order row and its event commit together.
let written = 0;
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
        await enqueue(client, {
          topic,
          key: customer,
          payload: { orderId: rows[0].id, customer, total },
          eventType: 'OrderPlaced',
          aggregateType: 'order',
          aggregateId: String(rows[0].id),
        });
        await client.query('commit');
        written += 1;
      } finally {
        client.release();
      }
    }
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
})();

const progress = setInterval(() => {
  const sorted = [...latencies].sort((a, b) => a - b);
  const p = (q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? 0;
  console.log(`written=${written} received=${received.size} commit→read p50=${p(0.5)}ms p99=${p(0.99)}ms`);
}, 1000);

await writer;
const deadline = Date.now() + 60_000;
while (received.size < written && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 100));
// Keep reading a little longer so that a duplicate would be seen.
await new Promise((resolve) => setTimeout(resolve, 1500));
reading = false;
await readLoop;
clearInterval(progress);
await relay.stop();
await new Promise<void>((resolve) => reader.disconnect(() => resolve()));
const { rows } = await pool.query(`select count(*)::int as n from outbox.messages where topic = $1 and state = 'sent'`, [topic]);
await pool.end();

const duplicates = [...received.values()].filter((n) => n > 1).length;
const missing = written - received.size;
const ok = duplicates === 0 && missing === 0 && rows[0].n === written;
const sorted = [...latencies].sort((a, b) => a - b);
console.log(`latency commit→read: p50=${sorted[Math.floor(sorted.length / 2)] ?? 0}ms p99=${sorted[Math.floor(sorted.length * 0.99)] ?? 0}ms`);
console.log(`orders written=${written} records received=${received.size} marked sent=${rows[0].n} duplicates=${duplicates} missing=${missing} → ${ok ? 'CONSISTENT' : 'INCONSISTENT'}`);
process.exit(ok ? 0 : 1);
