import { describe, expect, it } from 'vitest';
import { freshSchema } from '../helpers/db.js';
import { freshTopic } from '../helpers/kafka.js';
import { uniqueName, waitFor } from '../helpers/wait.js';
import { createEffectsTable, effectCounts, effectHandler, exactlyOnceReport, testConsumer } from './harness.js';
import { useTestServices } from '../helpers/services.js';

describe('consumer: zombie fencing', () => {
  const { pool, admin, producer, consumers } = useTestServices();

  it('a consumer that lost its partition while blocked in the handler commits nothing afterwards', async () => {
    const schema = await freshSchema(pool);
    await createEffectsTable(pool, schema);
    const topic = await freshTopic(admin, 1);
    const groupId = uniqueName('g');

    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    let blockedInHandler = false;
    const applyA = effectHandler(schema, 'A');
    const a = testConsumer({
      schema,
      groupId,
      topics: [topic],
      handler: async (record, tx) => {
        await applyA(record, tx);
        if (record.value?.toString() === 'r7') {
          blockedInHandler = true;
          await gate; // stuck far past max.poll.interval: the group removes A
        }
      },
    });
    consumers.push(a);
    const fenced: { stored: number }[] = [];
    a.on('fenced', (e) => fenced.push({ stored: e.stored }));
    await a.start();

    const first = ['r0', 'r1', 'r2', 'r3', 'r4'];
    await producer.send(topic, first.map((k) => ({ key: k, value: k })));
    await waitFor(async () => (await effectCounts(pool, schema)).size === first.length, { timeoutMs: 30_000 });
    const second = ['r5', 'r6', 'r7', 'r8', 'r9'];
    const delivered = await producer.send(topic, second.map((k) => ({ key: k, value: k })));
    await waitFor(() => blockedInHandler, { timeoutMs: 30_000 });

    // B joins; once A is out of the group, B takes the partition from the stored offset.
    const b = testConsumer({ schema, groupId, topics: [topic], handler: effectHandler(schema, 'B') });
    consumers.push(b);
    await b.start();
    await waitFor(
      async () => {
        const { rows } = await pool.query(`select count(*)::int as n from "${schema}".effects where consumer = 'B'`);
        return rows[0].n === second.length;
      },
      { timeoutMs: 45_000, message: 'B applied the records A was stuck on' },
    );

    // A wakes up and tries to commit its batch: the stored offset moved, so nothing of it applies.
    release();
    await waitFor(() => fenced.length > 0, { timeoutMs: 30_000, message: 'A was fenced' });
    expect(fenced[0]!.stored).toBe(delivered.at(-1)!.offset + 1);

    const counts = await effectCounts(pool, schema);
    expect(exactlyOnceReport(counts, [...first, ...second])).toEqual({ duplicates: [], missing: [], unexpected: [] });
    const { rows } = await pool.query<{ consumer: string; n: number }>(
      `select consumer, count(*)::int as n from "${schema}".effects where record_key = any($1::text[]) group by consumer`,
      [second],
    );
    expect(rows).toEqual([{ consumer: 'B', n: second.length }]);
    await Promise.all([a.stop(), b.stop()]);
  });
});
