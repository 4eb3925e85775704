import { describe, expect, it } from 'vitest';
import { halfOpenDatabase } from '../support/db.js';
import { useTestServices } from '../support/services.js';
import { waitFor, within } from '../support/wait.js';
import { effectCounts, effectHandler, effectTotal, exactlyOnceReport, testConsumer } from '../support/consumer.js';
import type { ConsumedRecord } from '../../src/consumer/record.js';
import type { HandlerTx } from '../../src/consumer/transaction.js';

describe('consumer on PostgreSQL connections that go silent', () => {
  const { pool, producer, consumers, freshEffects } = useTestServices();

  it('a consumer whose PostgreSQL connections all go silent (half-open: no error, no answer) goes on with new ones, and applies every record once', { timeout: 180_000 }, async () => {
    const { schema, topic } = await freshEffects(3);
    const { proxy, url: proxied } = await halfOpenDatabase();
    const keys = (from: number, n: number) => Array.from({ length: n }, (_, i) => `r${from + i}`);
    const consumer = testConsumer({ schema, topics: [topic], databaseUrl: proxied, handlerTimeoutMs: 2_000, queryTimeoutMs: 4_000, handler: effectHandler(schema) });
    consumers.push(consumer);
    try {
      await producer.send(topic, keys(0, 60).map((k) => ({ key: k, value: k })));
      await consumer.start();
      await waitFor(async () => (await effectTotal(pool, schema)) >= 60, { timeoutMs: 30_000, message: 'first records applied' });
      // A batch in flight when its connection goes silent: its effects must not land twice.
      const applying = producer.send(topic, keys(60, 300).map((k) => ({ key: k, value: k })));
      const silenced = proxy.halfOpenAll();
      expect(silenced).toBeGreaterThan(0);
      await applying;
      // Every connection of the consumer was silenced: only new ones can apply these.
      await waitFor(async () => (await effectTotal(pool, schema)) >= 360, { timeoutMs: 90_000, message: 'records applied on new connections' });
      await producer.send(topic, keys(360, 40).map((k) => ({ key: k, value: k })));
      await waitFor(async () => (await effectTotal(pool, schema)) >= 400, { timeoutMs: 30_000, message: 'later records applied' });
      await consumer.stop();
      expect(exactlyOnceReport(await effectCounts(pool, schema), keys(0, 400))).toEqual({ duplicates: [], missing: [], unexpected: [] });
    } finally {
      await consumer.stop();
      await proxy.stop();
    }
  });

  it('a handler left waiting by a connection gone silent is not charged: with one attempt allowed, nothing is dead-lettered and every record is applied once', { timeout: 180_000 }, async () => {
    const { schema, topic } = await freshEffects(1);
    const { proxy, url: proxied } = await halfOpenDatabase();
    const keys = Array.from({ length: 30 }, (_, i) => `s${i}`);
    // s5's handler fails its first call (so the record is tried on its own, where each
    // attempt counts); its second holds a statement at the server for a second, and the
    // connection goes silent under it (its answer never comes), as does every other of the
    // consumer. A third call, on a new connection, applies it.
    let reachedSlow: () => void = () => undefined;
    const slowStarted = new Promise<void>((resolve) => (reachedSlow = resolve));
    let s5Calls = 0;
    const slowEffect = async (record: ConsumedRecord, tx: HandlerTx) => {
      if (record.value?.toString() === 's5') {
        s5Calls += 1;
        if (s5Calls === 1) throw new Error('the first call of s5 fails');
        if (s5Calls === 2) {
          const sleeping = tx.query(`select pg_sleep(1)`);
          reachedSlow();
          await sleeping;
        }
      }
      await effectHandler(schema)(record, tx);
    };
    const consumer = testConsumer({ schema, topics: [topic], databaseUrl: proxied, maxAttempts: 1, retryMinDelayMs: 10, handlerTimeoutMs: 2_000, handler: slowEffect });
    consumers.push(consumer);
    const aborts: string[] = [];
    consumer.on('aborted', ({ reason }) => aborts.push(reason));
    try {
      const send = (from: number, to: number) => producer.send(topic, keys.slice(from, to).map((k) => ({ key: k, value: k })));
      await send(0, 5);
      await consumer.start();
      await waitFor(async () => (await effectTotal(pool, schema)) >= 5, { timeoutMs: 30_000, message: 'first records applied' });
      await send(5, 6);
      await within(30_000, 'the handler of s5 started', slowStarted);
      expect(proxy.halfOpenAll()).toBeGreaterThan(0);
      await send(6, keys.length);
      const deadLetters = async () => (await pool.query(`select "offset"::int, error from "${schema}".dead_letters`)).rows;
      await waitFor(async () => (await effectTotal(pool, schema)) + (await deadLetters()).length >= keys.length, {
        timeoutMs: 120_000,
        message: 'every record applied (or dead-lettered) on new connections',
      });
      await consumer.stop();
      expect(await deadLetters()).toEqual([]);
      expect(s5Calls).toBe(3);
      // Seen as the connection's failure, and counted as such.
      expect(aborts).toEqual(['connection-silent']);
      const counted = (await consumer.metrics.getSingleMetric('consumer_batches_aborted_total')!.get()).values;
      expect(counted.map((v) => [v.labels.reason, v.value])).toEqual([['connection-silent', 1]]);
      expect(exactlyOnceReport(await effectCounts(pool, schema), keys)).toEqual({ duplicates: [], missing: [], unexpected: [] });
    } finally {
      await consumer.stop();
      await proxy.stop();
    }
  });

  /**
   * A consumer allowing one attempt, whose handler does `overrun` for the record `slow` (the
   * records `a` and `b` around it apply at once); answers the dead letters' errors and the
   * reasons of the aborts it reported, once the other two records are applied.
   */
  async function overrunOnce(overrun: (tx: HandlerTx) => Promise<void>): Promise<{ errors: string[]; aborts: string[] }> {
    const { schema, topic } = await freshEffects(1);
    const consumer = testConsumer({
      schema,
      topics: [topic],
      maxAttempts: 1,
      handlerTimeoutMs: 1_000,
      handler: async (record, tx) => {
        if (record.value?.toString() === 'slow') await overrun(tx);
        await effectHandler(schema)(record, tx);
      },
    });
    consumers.push(consumer);
    const aborts: string[] = [];
    consumer.on('aborted', ({ reason }) => aborts.push(reason));
    await producer.send(topic, ['a', 'slow', 'b'].map((k) => ({ key: k, value: k })));
    await consumer.start();
    await waitFor(async () => (await effectTotal(pool, schema)) >= 2, { timeoutMs: 30_000, message: 'the other records applied' });
    const { rows } = await pool.query<{ error: string }>(`select error from "${schema}".dead_letters`);
    await consumer.stop();
    return { errors: rows.map((r) => r.error), aborts };
  }

  it('a handler that blocks the event loop past its time, an answer unread meanwhile, is charged: not mistaken for a silent connection', async () => {
    const { errors, aborts } = await overrunOnce(async (tx) => {
      const answer = tx.query('select 1');
      // Synchronous work longer than the handler's time: the answer arrives and waits unread.
      const until = Date.now() + 2_500;
      while (Date.now() < until);
      await answer;
    });
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatch(/did not finish within handlerTimeoutMs/);
    expect(aborts).not.toContain('connection-silent');
  });

  it('a handler that overruns its time on a healthy connection is still charged: with one attempt allowed, its record is dead-lettered as HANDLER_TIMEOUT', async () => {
    // A statement the server works on for longer than handlerTimeoutMs: the handler's fault.
    const { errors } = await overrunOnce(async (tx) => {
      await tx.query(`select pg_sleep(30)`);
    });
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatch(/HANDLER_TIMEOUT|did not finish within handlerTimeoutMs/);
  });
});
