import { describe, expect, it } from 'vitest';
import { HEADER } from '../../src/outbox/event.js';
import { uniqueName, waitFor } from '../support/wait.js';
import { effectCounts, effectHandler, effectTotal, exactlyOnceReport, testConsumer } from '../support/consumer.js';
import { useTestServices } from '../support/services.js';

describe('consumer: exactly-once effects', () => {
  const { pool, producer, consumers, freshEffects, startConsumer } = useTestServices();

  it('every record is applied once and the next offset is stored with its effects', async () => {
    const { schema, topic } = await freshEffects(3);
    const keys = Array.from({ length: 90 }, (_, i) => `r${i}`);
    const delivered = await producer.send(topic, keys.map((k) => ({ key: k, value: k })));
    const groupId = uniqueName('g');
    const consumer = await startConsumer({ schema, groupId, topics: [topic], handler: effectHandler(schema) });
    await consumer.start(); // idempotent
    await waitFor(async () => (await effectTotal(pool, schema)) >= keys.length, { timeoutMs: 30_000 });
    await consumer.stop();
    await consumer.stop(); // idempotent

    expect(exactlyOnceReport(await effectCounts(pool, schema), keys)).toEqual({ duplicates: [], missing: [], unexpected: [] });
    const { rows } = await pool.query<{ partition: number; next_offset: string }>(
      `select partition, next_offset from "${schema}".consumer_offsets where group_id = $1 order by partition`,
      [groupId],
    );
    const lastPerPartition = new Map<number, number>();
    for (const d of delivered) lastPerPartition.set(d.partition, Math.max(lastPerPartition.get(d.partition) ?? -1, d.offset));
    expect(rows.map((r) => [r.partition, Number(r.next_offset)])).toEqual([...lastPerPartition].sort(([a], [b]) => a - b).map(([p, o]) => [p, o + 1]));
  });

  it('a re-published outbox id is applied once', async () => {
    const { schema, topic } = await freshEffects(2);
    const event = (id: number) => ({
      key: `k${id % 3}`,
      value: `e${id}`,
      headers: { [HEADER.outboxId]: String(id), [HEADER.source]: 'orders-db', [HEADER.eventType]: 'order.paid' },
    });
    await producer.send(topic, [1, 2, 3, 4, 5, 6].map(event));
    // The relay re-publishes 2 and 5 (new Kafka offsets, same outbox ids), then 7 is new.
    await producer.send(topic, [2, 5, 7].map(event));
    const seen: (string | undefined)[] = [];
    const handler = effectHandler(schema);
    const consumer = testConsumer({
      schema,
      topics: [topic],
      handler: async (record, tx) => {
        seen.push(record.headers.eventType);
        await handler(record, tx);
      },
    });
    consumers.push(consumer);
    let skipped = 0;
    consumer.on('batch', (b) => (skipped += b.skipped));
    await consumer.start();
    await waitFor(() => skipped === 2, { timeoutMs: 30_000 });
    await consumer.stop();

    const expected = [1, 2, 3, 4, 5, 6, 7].map((i) => `e${i}`);
    expect(exactlyOnceReport(await effectCounts(pool, schema), expected)).toEqual({ duplicates: [], missing: [], unexpected: [] });
    expect(seen.every((t) => t === 'order.paid')).toBe(true);
    const inbox = await pool.query(`select source, outbox_id from "${schema}".consumer_inbox order by outbox_id::int`);
    expect(inbox.rows.map((r) => r.outbox_id)).toEqual(['1', '2', '3', '4', '5', '6', '7']);
    expect(new Set(inbox.rows.map((r) => r.source))).toEqual(new Set(['orders-db']));
  });

  it('two consumers in one group with partitions moving between them apply every record exactly once', async () => {
    const { schema, topic } = await freshEffects(4);
    const groupId = uniqueName('g');
    const a = await startConsumer({ schema, groupId, topics: [topic], handler: effectHandler(schema, 'A') });

    // Records keep flowing while partitions move.
    const produced: string[] = [];
    let producing = true;
    const flow = (async () => {
      // Records keep flowing until every move is done (bounded for safety), so each new
      // owner has records to apply.
      for (let batch = 0; producing && produced.length < 20_000; batch++) {
        const keys = Array.from({ length: 10 }, (_, i) => `b${batch}-${i}`);
        await producer.send(topic, keys.map((k) => ({ key: k, value: k })));
        produced.push(...keys);
        await new Promise((resolve) => setTimeout(resolve, 20)); // pacing, not synchronisation
      }
    })();

    let moves = 0;
    for (let round = 0; round < 3; round++) {
      const b = testConsumer({ schema, groupId, topics: [topic], handler: effectHandler(schema, `B${round}`) });
      consumers.push(b);
      let assignedToB = 0;
      b.on('assigned', (e) => (assignedToB += e.partitions.length));
      let appliedByB = 0;
      b.on('batch', (e) => (appliedByB += e.applied));
      await b.start();
      await waitFor(() => assignedToB > 0 && appliedByB > 0, { timeoutMs: 40_000, message: 'B took partitions and applied records' });
      await b.stop();
      moves++;
      // A takes everything back and keeps applying.
      await waitFor(() => a.assignment().length === 4, { timeoutMs: 40_000, message: 'A owns all partitions again' });
    }
    producing = false;
    await flow;
    await waitFor(async () => (await effectTotal(pool, schema)) >= produced.length, { timeoutMs: 60_000 });
    await a.stop();

    const counts = await effectCounts(pool, schema);
    const report = exactlyOnceReport(counts, produced);
    console.log(`two consumers: ${produced.length} records, ${moves} moves, ${report.duplicates.length} duplicates`);
    expect(report).toEqual({ duplicates: [], missing: [], unexpected: [] });
    expect(await effectTotal(pool, schema)).toBe(produced.length);
    const byConsumer = await pool.query<{ consumer: string }>(`select distinct consumer from "${schema}".effects`);
    expect(byConsumer.rows.length).toBeGreaterThan(1);
  });

  it('with fromBeginning false, the start is pinned at the first assignment: records arriving before the first commit are not skipped', async () => {
    const { schema, topic } = await freshEffects(1);
    await producer.send(topic, [{ key: 'old', value: 'old' }]);
    const groupId = uniqueName('g');
    const first = testConsumer({ schema, groupId, topics: [topic], fromBeginning: false, handler: effectHandler(schema) });
    consumers.push(first);
    let assigned = 0;
    first.on('assigned', () => assigned++);
    await first.start();
    await waitFor(() => assigned > 0);
    await first.stop(); // stopped before any record arrived
    const stored = await pool.query(`select next_offset::int as n from "${schema}".consumer_offsets where group_id = $1`, [groupId]);
    expect(stored.rows).toHaveLength(1);

    await producer.send(topic, [{ key: 'new', value: 'new' }]);
    const second = await startConsumer({ schema, groupId, topics: [topic], fromBeginning: false, handler: effectHandler(schema) });
    await waitFor(async () => (await effectCounts(pool, schema)).has('new'), { timeoutMs: 30_000, message: 'record produced between the runs applied' });
    await second.stop();
    expect([...(await effectCounts(pool, schema)).keys()]).toEqual(['new']);
  });
});
