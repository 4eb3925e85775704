import type pg from 'pg';
import { afterAll, beforeAll, describe, it } from 'vitest';
import { KafkaAdmin } from '../../src/kafka/admin.js';
import type { Relay } from '../../src/relay/relay.js';
import { OwnBroker } from '../support/broker.js';
import { freshSchema, testPool } from '../support/db.js';
import { freshTopic, kafkaConnection, readTopic } from '../support/kafka.js';
import { countByOutboxId, expectExactlyOnce, expectPerKeyOrder, startRelay, waitAllSent } from '../support/relay.js';
import { waitFor } from '../support/wait.js';
import { startWriter } from '../support/writer.js';

async function sentCount(pool: pg.Pool, schema: string): Promise<number> {
  return (await pool.query(`select count(*)::int as n from ${schema}.messages where state = 'sent'`)).rows[0].n;
}

describe('relay outages', () => {
  let pool: pg.Pool;

  beforeAll(() => {
    pool = testPool(8);
  });
  afterAll(() => pool.end());

  it('the broker is killed and restarted mid-stream: nothing lost, nothing duplicated', { timeout: 240_000 }, async () => {
    const broker = new OwnBroker(19392, 19393);
    let relay: Relay | undefined;
    try {
      await broker.start();
      const connection = kafkaConnection(broker.brokers);
      const admin = new KafkaAdmin(connection);
      const schema = await freshSchema(pool);
      const topic = await freshTopic(admin, 3);
      admin.close();
      // Short transaction (and so delivery) timeout: a batch caught by the outage fails in
      // seconds instead of the default minute.
      relay = await startRelay(schema, { brokers: broker.brokers, batchSize: 50, transactionTimeoutMs: 8_000, transactionOperationTimeoutMs: 8_000 });
      let failures = 0;
      relay.events.on('error', () => failures++);
      const writer = startWriter(pool, schema, topic, 3_000, 23, 2);
      await waitFor(async () => (await sentCount(pool, schema)) >= 200, { timeoutMs: 60_000, message: 'first rows sent' });
      await broker.kill();
      // Writers keep committing while Kafka is down; their rows wait in the outbox.
      const writtenAtKill = writer.ids.length;
      await waitFor(() => writer.ids.length >= writtenAtKill + 300, { timeoutMs: 60_000, message: 'rows written during the outage' });
      await waitFor(() => failures > 0, { timeoutMs: 40_000, message: 'the relay noticed the outage' });
      await broker.start();
      await writer.done;
      await waitAllSent(pool, schema, 120_000);
      const read = await readTopic(connection, topic, 3, { expected: writer.ids.length, timeoutMs: 60_000 });
      const duplicates = [...countByOutboxId(read).values()].filter((n) => n > 1).length;
      console.info(`broker outage: rows=${writer.ids.length} relay failures=${failures} records=${read.length} duplicates=${duplicates}`);
      expectExactlyOnce(read, writer.ids);
      expectPerKeyOrder(read);
    } finally {
      await relay?.stop();
      await broker.stop();
    }
  });

  it('Postgres connections are dropped mid-stream: nothing lost, nothing duplicated', { timeout: 180_000 }, async () => {
    const connection = kafkaConnection();
    const admin = new KafkaAdmin(connection);
    const schema = await freshSchema(pool);
    const topic = await freshTopic(admin, 3);
    admin.close();
    const relay = await startRelay(schema, { batchSize: 30 });
    const writer = startWriter(pool, schema, topic, 1_500);
    let drops = 0;
    try {
      for (let round = 1; round <= 4; round++) {
        await waitFor(async () => (await sentCount(pool, schema)) >= round * 250, { timeoutMs: 60_000, message: `round ${round} progress` });
        const { rows } = await pool.query(
          `select count(pg_terminate_backend(pid))::int as n from pg_stat_activity where application_name = $1`,
          [`outbox-relay ${relay.options.relayId}`.slice(0, 63)],
        );
        drops += rows[0].n;
      }
      await writer.done;
      await waitAllSent(pool, schema, 120_000);
    } finally {
      await relay.stop();
    }
    const read = await readTopic(connection, topic, 3, { expected: writer.ids.length, timeoutMs: 60_000 });
    console.info(`postgres drops: rows=${writer.ids.length} connections dropped=${drops} records=${read.length}`);
    expectExactlyOnce(read, writer.ids);
    expectPerKeyOrder(read);
  });
});
