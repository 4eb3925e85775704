import { describe, expect, it } from 'vitest';
import { enqueue } from '../../src/outbox/enqueue.js';
import { halfOpenDatabase, inTransaction } from '../support/db.js';
import { kafkaConnection, readTopic } from '../support/kafka.js';
import { expectExactlyOnce, expectPerKeyOrder, startRelay, waitAllSent } from '../support/relay.js';
import { useTestServices } from '../support/services.js';

describe('relay on connections that go silent', () => {
  const { pool, freshOutbox } = useTestServices();

  it('a relay whose PostgreSQL connections all go silent (half-open: no error, no answer) recovers on new ones, and every row is published once, in key order', { timeout: 180_000 }, async () => {
    const { schema, topic } = await freshOutbox(3);
    const { proxy, url: proxied } = await halfOpenDatabase();
    const write = (from: number, n: number) =>
      inTransaction(pool, (client) => enqueue(client, Array.from({ length: n }, (_, i) => ({ topic, key: `k${(from + i) % 7}`, payload: { i: from + i } })), { schema }));
    // Short leases, timeouts and polls, so the recovery fits a test; the poll interval is
    // long, so rows can only go through wake-ups on a listening connection that works.
    const relay = await startRelay(schema, { databaseUrl: proxied, shards: 2, leaseMs: 3_000, queryTimeoutMs: 3_000, pollIntervalMs: 60_000 });
    try {
      const ids = await write(0, 50);
      await waitAllSent(pool, schema, 30_000);
      const silenced = proxy.halfOpenAll();
      expect(silenced).toBeGreaterThan(0);
      ids.push(...(await write(50, 50)));
      // Every connection of the relay was silenced: only new ones can carry these rows.
      await waitAllSent(pool, schema, 90_000);
      ids.push(...(await write(100, 20)));
      await waitAllSent(pool, schema, 30_000);
      const messages = await readTopic(kafkaConnection(), topic, 3, { expected: ids.length });
      expectExactlyOnce(messages, ids);
      expectPerKeyOrder(messages);
    } finally {
      await relay.stop();
      await proxy.stop();
    }
  });
});
