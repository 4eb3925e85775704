// One exactly-once consumer as an application runs it: the built package (dist/), plain
// Node.js, no TypeScript loader. Started by bench/consumer-memory.ts with its arguments as
// JSON in argv[2]; prints one JSON line when it has applied every record.
import { createConsumer, createLogger } from '../dist/index.js';

const args = JSON.parse(process.argv[2]);
const table = `${args.schema}.${args.table}`;
const insertMany = `insert into ${table} (k, p, o) select * from unnest($1::text[], $2::int[], $3::bigint[])`;
const insertOne = `insert into ${table} (k, p, o) values ($1, $2, $3)`;
let applied = 0;
let first;
let last = 0;
const consumer = createConsumer({
  databaseUrl: args.databaseUrl,
  brokers: args.brokers,
  groupId: `bench-${args.table}`,
  topics: [args.topic],
  schema: args.schema,
  logger: createLogger({ level: 'error' }),
  ...(args.kind === 'handler'
    ? {
        handler: async (record, tx) => {
          first ??= performance.now();
          await tx.query(insertOne, [record.key?.toString() ?? null, record.partition, record.offset]);
        },
      }
    : {
        batchHandler: async (records, tx) => {
          first ??= performance.now();
          await tx.query(insertMany, [records.map((r) => r.key?.toString() ?? null), records.map((r) => r.partition), records.map((r) => r.offset)]);
        },
      }),
});
const done = new Promise((resolve) =>
  consumer.on('batch', (e) => {
    applied += e.applied + e.skipped;
    last = performance.now();
    if (applied >= args.records) resolve();
  }),
);
const timer = setTimeout(() => {
  process.stderr.write(`consumer-memory child: timed out with ${applied} of ${args.records} records\n`);
  process.exit(2);
}, 10 * 60_000);
await consumer.start();
await done;
clearTimeout(timer);
await consumer.stop();
process.stdout.write(`${JSON.stringify({ ms: last - (first ?? last) })}\n`);
process.exit(0);
