import { describe, expect, it } from 'vitest';
import { enqueue } from '../../src/outbox/enqueue.js';
import { HEADER } from '../../src/outbox/event.js';
import { freshSchema, inTransaction } from '../support/db.js';
import { freshTopic } from '../support/kafka.js';
import { startRelay, waitAllSent } from '../support/relay.js';
import { useTestServices } from '../support/services.js';
import { waitFor } from '../support/wait.js';
import { createEffectsTable, effectCounts, effectHandler, effectTotal, exactlyOnceReport } from '../support/consumer.js';

describe('consumer: de-duplication is per source', () => {
  const { pool, admin, producer, freshEffects, startConsumer } = useTestServices({ poolSize: 8 });

  it('two outboxes publishing to one group are both applied, although their outbox ids collide', async () => {
    const consumerSchema = await freshSchema(pool);
    await createEffectsTable(pool, consumerSchema);
    const topic = await freshTopic(admin, 2);
    // Two services, each with its own outbox (schema) and relay: their ids both start at 1.
    const outboxes = [await freshSchema(pool), await freshSchema(pool)];
    const relays = await Promise.all(outboxes.map((schema) => startRelay(schema)));
    try {
      const ids: string[][] = [];
      for (const [n, schema] of outboxes.entries()) {
        ids.push(
          await inTransaction(pool, (client) =>
            enqueue(client, [1, 2, 3, 4].map((i) => ({ topic, key: `k${i}`, payload: `service${n}-event${i}` })), { schema }),
          ),
        );
      }
      expect(ids[0]).toEqual(ids[1]);
      await Promise.all(outboxes.map((schema) => waitAllSent(pool, schema)));
    } finally {
      await Promise.all(relays.map((r) => r.stop()));
    }
    const consumer = await startConsumer({ schema: consumerSchema, topics: [topic], handler: effectHandler(consumerSchema) });
    const expected = [0, 1].flatMap((n) => [1, 2, 3, 4].map((i) => `service${n}-event${i}`));
    await waitFor(async () => (await effectTotal(pool, consumerSchema)) >= expected.length, { timeoutMs: 30_000, message: 'all 8 events applied' });
    await consumer.stop();
    expect(exactlyOnceReport(await effectCounts(pool, consumerSchema), expected)).toEqual({ duplicates: [], missing: [], unexpected: [] });
    const sources = await pool.query(`select distinct source from "${consumerSchema}".consumer_inbox`);
    const stamped = await Promise.all(outboxes.map(async (s) => (await pool.query(`select source_id from ${s}.outbox_source`)).rows[0].source_id));
    expect(sources.rows.map((r) => r.source).sort()).toEqual(stamped.sort());
  });

  it('records without a source header are applied by their offsets alone: an outbox-id header from elsewhere is not trusted', async () => {
    const { schema, topic } = await freshEffects(1);
    // Another producer copied an upstream event's outbox-id onto distinct events.
    await producer.send(topic, ['a', 'b', 'c'].map((v) => ({ key: v, value: v, headers: { [HEADER.outboxId]: '42' } })));
    const consumer = await startConsumer({ schema, topics: [topic], handler: effectHandler(schema) });
    await waitFor(async () => (await effectTotal(pool, schema)) >= 3, { timeoutMs: 30_000 });
    await consumer.stop();
    expect(exactlyOnceReport(await effectCounts(pool, schema), ['a', 'b', 'c'])).toEqual({ duplicates: [], missing: [], unexpected: [] });
    expect((await pool.query(`select count(*)::int as n from "${schema}".consumer_inbox`)).rows[0].n).toBe(0);
  });
});
