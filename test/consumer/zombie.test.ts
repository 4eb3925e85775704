import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { ownBrokerWithEffects } from '../support/broker.js';
import { databaseUrl } from '../support/db.js';
import { kafkaConnection } from '../support/kafka.js';
import { FixtureProcess } from '../support/process.js';
import { useTestServices } from '../support/services.js';
import { uniqueName, waitFor } from '../support/wait.js';
import { effectCounts, effectHandler, effectHandlerThen, exactlyOnceReport, testConsumer, relayed } from '../support/consumer.js';


describe('consumer: stuck handlers and zombies', () => {
  const { pool, producer, consumers, freshEffects, startConsumer } = useTestServices();

  it('a hung handler is aborted at handlerTimeoutMs: nothing it wrote commits, not even later, and the record is dead-lettered while the rest flows', async () => {
    const { schema, topic } = await freshEffects(1);
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const late: { code?: string }[] = [];
    const apply = effectHandler(schema);
    // A pool of its own, named, so that its backends are told from other consumers' (other
    // test files run at the same time, and their batches hold transactions open too).
    const applicationName = uniqueName('zombie-consumer');
    const ownPool = new pg.Pool({ connectionString: databaseUrl(), application_name: applicationName, max: 10 });
    ownPool.on('error', () => undefined);
    const consumer = testConsumer({
      schema,
      topics: [topic],
      databaseUrl: undefined,
      pool: ownPool,
      handlerTimeoutMs: 1_000,
      maxAttempts: 2,
      handler: effectHandlerThen(schema, 'hangs', async (record, tx) => {
        await gate;
        await apply(record, tx).catch((err: { code?: string }) => late.push(err));
      }),
    });
    consumers.push(consumer);
    const aborted: string[] = [];
    consumer.on('aborted', (e) => aborted.push(e.reason));
    await consumer.start();
    await producer.send(topic, relayed(['before', 'hangs', 'after']));
    await waitFor(async () => (await pool.query(`select count(*)::int as n from "${schema}".dead_letters`)).rows[0].n === 1, {
      timeoutMs: 30_000,
      message: 'the hung record dead-lettered',
    });
    await waitFor(async () => (await effectCounts(pool, schema)).has('after'), { timeoutMs: 30_000 });
    // The handler wakes up long after its transaction was aborted: its writes go nowhere.
    release();
    // Three calls hung: in the batch, then alone on each of its two attempts.
    await waitFor(() => late.length === 3, { timeoutMs: 10_000, message: 'every hung call tried to write late' });
    expect(late.map((e) => e.code)).toEqual(['TX_CLOSED', 'TX_CLOSED', 'TX_CLOSED']);
    const { rows } = await pool.query(`select error, attempts from "${schema}".dead_letters`);
    expect(rows[0]).toMatchObject({ attempts: 2 });
    expect(rows[0].error).toContain('handlerTimeoutMs');
    expect(aborted).toEqual(['handler-timeout', 'handler-timeout', 'handler-timeout']);
    expect(exactlyOnceReport(await effectCounts(pool, schema), ['before', 'after'])).toEqual({ duplicates: [], missing: [], unexpected: [] });
    const metrics = await consumer.metrics.getSingleMetricAsString('consumer_batches_aborted_total');
    expect(metrics).toMatch(/reason="handler-timeout"} 3/);
    // No backend of the consumer is left holding a transaction open.
    const idle = await pool.query(`select count(*)::int as n from pg_stat_activity where application_name = $1::text and state like 'idle in transaction%'`, [applicationName]);
    expect(idle.rows[0].n).toBe(0);
    await consumer.stop();
    await ownPool.end();
  });

  it('a consumer frozen in the middle of a batch never blocks the new owner, and commits nothing when it wakes', { timeout: 120_000 }, async () => {
    const { schema, topic } = await freshEffects(1);
    const groupId = uniqueName('g');
    const zombie = new FixtureProcess('consumer-holding.ts', {
      DATABASE_URL: databaseUrl(),
      KAFKA_BROKERS: String(kafkaConnection().brokers),
      TEST_SCHEMA: schema,
      TEST_TOPIC: topic,
      TEST_GROUP: groupId,
      TEST_CONSUMER_NAME: 'A',
      TEST_HOLD_VALUE: 'r2',
      TEST_HOLD_MS: '8000',
    });
    try {
      await zombie.waitForEvent('started');
      const values = ['r0', 'r1', 'r2', 'r3', 'r4'];
      await producer.send(topic, relayed(values));
      await zombie.waitForEvent('holding');
      // Frozen with its batch transaction open: it holds the offset row and the inbox rows of r0..r2.
      zombie.child.kill('SIGSTOP');

      const owner = await startConsumer({ schema, groupId, topics: [topic], handler: effectHandler(schema, 'B') });
      // The frozen member leaves the group after sessionTimeoutMs (6 s); PostgreSQL ends its
      // transaction after handlerTimeoutMs + 1 s idle (6 s); the new owner's lock wait is 2 s.
      await waitFor(
        async () => (await pool.query(`select count(*)::int as n from "${schema}".effects where consumer = 'B'`)).rows[0].n === values.length,
        { timeoutMs: 40_000, message: 'the new owner applied every record while the old one was frozen' },
      );

      zombie.child.kill('SIGCONT');
      await zombie.waitForEvent('late-write-refused', 1, 30_000);
      expect(zombie.events.find((e) => e.event === 'late-write-refused')?.code).toBe('TX_CLOSED');
      const counts = await effectCounts(pool, schema);
      expect(exactlyOnceReport(counts, values)).toEqual({ duplicates: [], missing: [], unexpected: [] });
      const byZombie = await pool.query(`select count(*)::int as n from "${schema}".effects where consumer = 'A'`);
      expect(byZombie.rows[0].n).toBe(0);
      await owner.stop();
    } finally {
      await zombie.kill();
    }
  });

  it('a member that loses its group session while a handler runs aborts the batch at the database at once, and commits nothing of it', { timeout: 120_000 }, async () => {
    const own = await ownBrokerWithEffects(pool, 19492, 19493);
    const { schema, broker, topic } = own;
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    let holding = false;
    const late: { code?: string }[] = [];
    const apply = effectHandler(schema);
    const consumer = testConsumer({
      schema,
      brokers: broker.brokers,
      topics: [topic],
      // The session (6 s) runs out long before the handler's own limit (12 s).
      maxPollIntervalMs: 30_000,
      handlerTimeoutMs: 12_000,
      handler: effectHandlerThen(schema, 'r2', async (record, tx) => {
        if (holding) return;
        holding = true;
        await gate;
        await apply(record, tx).catch((err: { code?: string }) => late.push(err));
      }),
    });
    try {
      consumers.push(consumer);
      const aborted: string[] = [];
      consumer.on('aborted', (e) => aborted.push(e.reason));
      await consumer.start();
      const values = ['r0', 'r1', 'r2', 'r3'];
      await own.producer.send(topic, relayed(values));
      await waitFor(() => holding, { timeoutMs: 30_000, message: 'handler holding r2' });
      // The coordinator stops answering: librdkafka declares the assignment lost after the session timeout.
      await broker.pause();
      try {
        await waitFor(() => aborted.includes('revoked'), { timeoutMs: 20_000, message: 'batch aborted as revoked' });
        // Nothing of the batch (r0, r1 and r2 shared its transaction) committed.
        expect((await effectCounts(pool, schema)).size).toBe(0);
      } finally {
        broker.resume();
      }
      release();
      await waitFor(() => late.length === 1, { timeoutMs: 10_000, message: 'the late write was refused' });
      expect(late[0]!.code).toBe('TX_CLOSED');
      // Back in the group, the member applies everything, once.
      await waitFor(async () => (await effectCounts(pool, schema)).size === values.length, { timeoutMs: 60_000, message: 'all applied after the session came back' });
      await consumer.stop();
      expect(exactlyOnceReport(await effectCounts(pool, schema), values)).toEqual({ duplicates: [], missing: [], unexpected: [] });
      expect(aborted).not.toContain('handler-timeout');
    } finally {
      await consumer.stop();
      await own.close();
    }
  });
  it('a handler still running when its batch is aborted runs no statement after the rollback: nothing it does lands outside the transaction', { timeout: 120_000 }, async () => {
    const own = await ownBrokerWithEffects(pool, 19592, 19593);
    const { schema, broker, topic } = own;
    const ownPool = new pg.Pool({ connectionString: databaseUrl(), max: 2 });
    ownPool.on('error', () => undefined);
    // Every statement of the looping handler leaves a row here, saying whether it ran in a
    // transaction block (now() is the transaction's start) or on its own (autocommit).
    await pool.query(`create table "${schema}".probe (inside boolean not null)`);
    let looping = false;
    let stop = false;
    let statements = 0;
    const refused: { code?: string }[] = [];
    const consumer = testConsumer({
      schema,
      brokers: broker.brokers,
      topics: [topic],
      databaseUrl: undefined,
      pool: ownPool,
      maxPollIntervalMs: 30_000,
      handlerTimeoutMs: 20_000,
      handler: effectHandlerThen(schema, 'loops', async (_record, tx) => {
        if (looping) return;
        looping = true;
        // Statement after statement, until the guard refuses one.
        while (!stop) {
          try {
            await tx.query(`insert into "${schema}".probe (inside) select now() <> statement_timestamp()`);
            statements++;
          } catch (err) {
            refused.push(err as { code?: string });
            if ((err as { code?: string }).code === 'TX_CLOSED') return;
          }
        }
      }),
    });
    try {
      consumers.push(consumer);
      const aborted: string[] = [];
      consumer.on('aborted', (e) => aborted.push(e.reason));
      await consumer.start();
      await own.producer.send(topic, relayed(['first', 'loops']));
      await waitFor(() => statements > 10, { timeoutMs: 30_000, message: 'handler looping in its transaction' });
      // The pool's other connection is taken: the abort's terminate has to wait for one, as
      // in a busy consumer, and only the consumer's own guard can keep the handler's
      // statements from running after the rollback.
      const held = await ownPool.connect();
      await broker.pause();
      try {
        await waitFor(() => aborted.includes('revoked'), { timeoutMs: 30_000, message: 'batch aborted as revoked' });
      } finally {
        held.release();
        broker.resume();
      }
      await waitFor(() => refused.some((e) => e.code === 'TX_CLOSED'), { timeoutMs: 10_000, message: 'the handler\'s statements refused' });
      // The batch transaction was rolled back: had a statement slipped in after its end, it
      // would have committed on its own.
      expect((await pool.query(`select inside from "${schema}".probe`)).rows).toEqual([]);
      await waitFor(async () => (await effectCounts(pool, schema)).size === 2, { timeoutMs: 60_000, message: 'both applied after the session came back' });
      expect(exactlyOnceReport(await effectCounts(pool, schema), ['first', 'loops'])).toEqual({ duplicates: [], missing: [], unexpected: [] });
    } finally {
      stop = true;
      await consumer.stop();
      await ownPool.end();
      await own.close();
    }
  });
});
