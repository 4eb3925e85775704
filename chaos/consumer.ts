// One consumer of the fault-injection suite, in a process of its own: the finance example
// of the README. Each record adds a ledger row and moves its account's balance, in the
// consumer's transaction. A record whose payload says `failOnce` fails its first attempt
// in this process. Configured by CHAOS_CONSUMER (JSON); SIGTERM stops gracefully.
import { createConsumer } from '../src/consumer/index.js';
import { createLogger } from '../src/log.js';

interface Config {
  databaseUrl: string;
  brokers: string;
  groupId: string;
  topics: string[];
  schema: string;
  name: string;
  maxPollIntervalMs: number;
}
const config = JSON.parse(process.env.CHAOS_CONSUMER ?? '{}') as Config;
const failed = new Set<string>();

const consumer = createConsumer({
  databaseUrl: config.databaseUrl,
  brokers: config.brokers,
  groupId: config.groupId,
  topics: config.topics,
  schema: config.schema,
  batchSize: 200,
  maxAttempts: 5,
  retryMinDelayMs: 20,
  retryMaxDelayMs: 200,
  sessionTimeoutMs: 6_000,
  heartbeatIntervalMs: 1_000,
  maxPollIntervalMs: config.maxPollIntervalMs,
  handlerTimeoutMs: 2_000,
  lockTimeoutMs: 2_000,
  pollTimeoutMs: 200,
  // A partition with lag that fetches nothing for 30 s has the Kafka consumer rebuilt.
  stallTimeoutMs: 30_000,
  watchdogIntervalMs: 2_000,
  logger: createLogger({ level: process.env.CHAOS_LOG_LEVEL ?? 'warn' }),
  handler: async (record, tx) => {
    const event = JSON.parse(record.value?.toString() ?? '{}') as { account: string; amount: number; failOnce?: boolean };
    const id = record.headers.outboxId ?? '';
    if (event.failOnce && !failed.has(id)) {
      failed.add(id);
      throw new Error(`first attempt of ${id} fails, as planned`);
    }
    await tx.query(`insert into ${config.schema}.ledger (outbox_id, account, amount, consumer) values ($1::bigint, $2::text, $3::bigint, $4::text)`, [id, event.account, event.amount, config.name]);
    await tx.query(
      `insert into ${config.schema}.balances (account, balance) values ($1::text, $2::bigint)
       on conflict (account) do update set balance = balances.balance + excluded.balance`,
      [event.account, event.amount],
    );
  },
});

consumer.on('rebuilt', (e) => process.stdout.write(`${JSON.stringify({ event: 'rebuilt', at: Date.now(), reason: e.reason })}\n`));

process.on('SIGTERM', () => {
  void consumer.stop().then(() => process.exit(0));
});
await consumer.start();
process.stdout.write(`${JSON.stringify({ event: 'started', at: Date.now() })}\n`);
