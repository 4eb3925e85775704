import { describe, expect, it } from 'vitest';
import { purgeInbox } from '../../src/consumer/retention.js';
import { quoteSchema } from '../../src/db/identifiers.js';
import { HEADER } from '../../src/outbox/event.js';
import { freshSchema } from '../support/db.js';
import { useTestServices } from '../support/services.js';
import { uniqueName, waitFor } from '../support/wait.js';
import { effectHandler, testConsumer, testLogger } from '../support/consumer.js';

const DAY = 24 * 3600 * 1000;

describe('consumer: inbox retention', () => {
  const { pool, producer, consumers, freshEffects } = useTestServices();

  it('inbox retention keeps the redelivery window: young rows and rows at or past the stored offset stay, in small batches', async () => {
    const schema = await freshSchema(pool);
    const q = quoteSchema(schema);
    const group = uniqueName('g');
    await pool.query(`insert into ${q}.consumer_offsets (group_id, topic, partition, next_offset) values ($1, 't', 0, 100), ($1, 't', 1, 10)`, [group]);
    // Partition 0: 90 old rows below the stored offset (deletable) and 5 young ones. Partition 1:
    // old rows 5..14 with the stored offset at 10 (after a rewind): those below it go, those
    // at or past it can be delivered again and stay. Another group's rows are not touched.
    await pool.query(
      `insert into ${q}.consumer_inbox (group_id, source, outbox_id, topic, partition, "offset", applied_at)
       select $1, 's', 'p0-' || i, 't', 0, i, now() - interval '8 days' from generate_series(0, 89) i
       union all select $1, 's', 'p0y-' || i, 't', 0, 90 + i, now() from generate_series(0, 4) i
       union all select $1, 's', 'p1-' || i, 't', 1, i, now() - interval '8 days' from generate_series(5, 14) i
       union all select 'other-group', 's', 'x-' || i, 't', 0, i, now() - interval '8 days' from generate_series(0, 9) i`,
      [group],
    );
    const deleted = await purgeInbox(pool, q, group, { keepMs: 7 * DAY, batchSize: 40 }, new AbortController().signal, testLogger);
    expect(deleted).toBe(90 + 5);
    const left = await pool.query(`select group_id, partition, count(*)::int as n, min("offset")::int as min from ${q}.consumer_inbox group by 1, 2 order by 1, 2`);
    expect(left.rows).toEqual([
      { group_id: group, partition: 0, n: 5, min: 90 },
      { group_id: group, partition: 1, n: 5, min: 10 },
      { group_id: 'other-group', partition: 0, n: 10, min: 0 },
    ]);
  });

  it('a running consumer purges its aged inbox rows and counts them', async () => {
    const { schema, topic } = await freshEffects(1);
    const consumer = testConsumer({ schema, topics: [topic], handler: effectHandler(schema), inboxRetention: { keepMs: DAY, intervalMs: 200 } });
    consumers.push(consumer);
    const purged: number[] = [];
    consumer.on('inboxPurged', (e) => purged.push(e.deleted));
    await consumer.start();
    await producer.send(topic, ['a', 'b', 'c'].map((v, i) => ({ key: v, value: v, headers: { [HEADER.outboxId]: String(i + 1), [HEADER.source]: 'orders-db' } })));
    await waitFor(async () => (await pool.query(`select count(*)::int as n from "${schema}".consumer_inbox`)).rows[0].n === 3, { timeoutMs: 30_000 });
    await pool.query(`update "${schema}".consumer_inbox set applied_at = now() - interval '2 days' where outbox_id in ('1', '2')`);
    await waitFor(async () => (await pool.query(`select count(*)::int as n from "${schema}".consumer_inbox`)).rows[0].n === 1, { timeoutMs: 10_000 });
    await waitFor(() => purged.includes(2), { timeoutMs: 5_000 });
    await consumer.stop();
    expect(await consumer.metrics.getSingleMetricAsString('consumer_inbox_deleted_total')).toMatch(/} 2$/m);
  });
});
