import type pg from 'pg';
import { onTestFailed } from 'vitest';
import { createConsumer, type Consumer, type ConsumerOptions, type RecordHandler } from '../../src/consumer/index.js';
import { createLogger, type Logger } from '../../src/log.js';
import { databaseUrl } from './db.js';
import { kafkaConnection } from './kafka.js';
import type { TestRecord } from './produce.js';
import { uniqueName } from './wait.js';
import { HEADER } from '../../src/outbox/event.js';

export { FAST_GROUP } from './processes/timings.js';
import { FAST_GROUP } from './processes/timings.js';

export const testLogger = createLogger({ level: process.env.TEST_LOG_LEVEL ?? 'silent' });

/** The effects table of the test handlers: deliberately without a unique constraint, so a duplicate shows up as a second row. */
export async function createEffectsTable(pool: pg.Pool, schema: string): Promise<void> {
  await pool.query(`create table "${schema}".effects (
    id bigserial primary key,
    record_key text not null,
    topic text not null,
    partition int not null,
    "offset" bigint not null,
    consumer text
  )`);
}

/** A handler writing one effect row per application, through the transaction's client. */
export function effectHandler(schema: string, consumerName = 'c'): RecordHandler {
  return async (record, tx) => {
    await tx.query(`insert into "${schema}".effects (record_key, topic, partition, "offset", consumer) values ($1::text, $2::text, $3::int, $4::bigint, $5::text)`, [
      record.value?.toString() ?? '',
      record.topic,
      record.partition,
      record.offset,
      consumerName,
    ]);
  };
}

/** {@link effectHandler}, then, for a record whose value is `value`, `then` in the same transaction, after its effect. */
export function effectHandlerThen(schema: string, value: string, then: RecordHandler): RecordHandler {
  const apply = effectHandler(schema);
  return async (record, tx) => {
    await apply(record, tx);
    if (record.value?.toString() === value) await then(record, tx);
  };
}

/** {@link effectHandler}, but a record whose value `failure` answers an error for throws it instead. */
export function effectHandlerFailing(schema: string, failure: (value: string) => Error | undefined): RecordHandler {
  const apply = effectHandler(schema);
  return async (record, tx) => {
    const error = failure(record.value?.toString() ?? '');
    if (error !== undefined) throw error;
    await apply(record, tx);
  };
}

/**
 * A logger keeping the last lines at debug level in memory, printed only if the running
 * test fails: a rare failure in CI then says what the consumer went through. With
 * TEST_LOG_LEVEL set, logs go to stdout as usual instead.
 */
function failureLogger(): Logger {
  if (process.env.TEST_LOG_LEVEL) return testLogger;
  const lines: string[] = [];
  const logger = createLogger({
    level: 'debug',
    destination: {
      write(line: string) {
        lines.push(line.trimEnd());
        if (lines.length > 400) lines.splice(0, lines.length - 400);
      },
    },
  });
  try {
    onTestFailed(() => console.log(`last ${lines.length} log lines of a consumer of this test:\n${lines.join('\n')}`));
  } catch {
    // Created outside a running test (a hook): nothing to attach the lines to.
  }
  return logger;
}

export function testConsumer(options: Partial<ConsumerOptions> & Pick<ConsumerOptions, 'topics' | 'handler'>): Consumer {
  return createConsumer({
    databaseUrl: databaseUrl(),
    brokers: kafkaConnection().brokers,
    groupId: uniqueName('g'),
    logger: failureLogger(),
    ...FAST_GROUP,
    ...options,
  });
}

/** Effect counts per record key. */
export async function effectCounts(pool: pg.Pool, schema: string): Promise<Map<string, number>> {
  const { rows } = await pool.query<{ record_key: string; n: string }>(`select record_key, count(*) as n from "${schema}".effects group by record_key`);
  return new Map(rows.map((r) => [r.record_key, Number(r.n)]));
}

export async function effectTotal(pool: pg.Pool, schema: string): Promise<number> {
  const { rows } = await pool.query<{ n: string }>(`select count(*) as n from "${schema}".effects`);
  return Number(rows[0]!.n);
}

/** Records as the relay publishes them (outbox id from `firstId`, one source), so the inbox is in play; value = key = the given string. */
export function relayed(values: string[], firstId = 1): TestRecord[] {
  return values.map((v, i) => ({ key: v, value: v, headers: { [HEADER.outboxId]: String(firstId + i), [HEADER.source]: 'orders-db' } }));
}

export { exactlyOnceReport } from './exactly-once.js';
