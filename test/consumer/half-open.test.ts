import { describe, expect, it } from 'vitest';
import { halfOpenDatabase } from '../support/db.js';
import { useTestServices } from '../support/services.js';
import { waitFor } from '../support/wait.js';
import { effectCounts, effectHandler, effectTotal, exactlyOnceReport, testConsumer } from '../support/consumer.js';

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
});
