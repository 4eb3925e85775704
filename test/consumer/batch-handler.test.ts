import { describe, expect, it } from 'vitest';
import type { BatchHandler, ConsumedRecord } from '../../src/consumer/index.js';
import { useTestServices } from '../support/services.js';
import { uniqueName, waitFor } from '../support/wait.js';
import { effectCounts, effectHandler, exactlyOnceReport, relayed, testConsumer } from '../support/consumer.js';

const range = (prefix: string, n: number) => Array.from({ length: n }, (_, i) => `${prefix}${i}`);

/** One multi-row insert of effects per call, as a batch handler writes them. */
function effectBatchHandler(schema: string, calls: ConsumedRecord[][] = []): BatchHandler {
  return async (records, tx) => {
    calls.push(records);
    await tx.query(
      `insert into "${schema}".effects (record_key, topic, partition, "offset", consumer)
       select k, $2::text, $3::int, o, 'c' from unnest($1::text[], $4::bigint[]) as r(k, o)`,
      [records.map((r) => r.value!.toString()), records[0]!.topic, records[0]!.partition, records.map((r) => r.offset)],
    );
  };
}

describe('consumer: batch handler', () => {
  const { pool, producer, freshEffects, startConsumer } = useTestServices();

  it('a batch handler applies every record once, in one call per partition batch, with duplicates of an outbox id dropped before the call', async () => {
    const { schema, topic } = await freshEffects(1);
    const keys = range('r', 30);
    // r10 and r11 published twice in the same transaction (a relay that re-published them).
    await producer.send(topic, [...relayed(keys.slice(0, 12), 1), ...relayed(keys.slice(10, 12), 11), ...relayed(keys.slice(12), 13)]);
    const calls: ConsumedRecord[][] = [];
    const groupId = uniqueName('g');
    const consumer = await startConsumer({ schema, groupId, topics: [topic], batchHandler: effectBatchHandler(schema, calls) });
    await waitFor(async () => (await effectCounts(pool, schema)).size === keys.length, { timeoutMs: 30_000 });
    const { rows } = await pool.query(`select next_offset::int as n from "${schema}".consumer_offsets where group_id = $1`, [groupId]);
    await consumer.stop();

    expect(exactlyOnceReport(await effectCounts(pool, schema), keys)).toEqual({ duplicates: [], missing: [], unexpected: [] });
    // Fewer calls than records: they came in batches, and no call saw a duplicate id.
    expect(calls.length).toBeLessThan(keys.length);
    const ids = calls.flat().map((r) => r.headers.outboxId);
    expect(new Set(ids).size).toBe(ids.length);
    // The offset stored is past the last of the 32 records.
    expect(rows[0].n).toBe(32);
  });

  it("a record failing in a batch handler's batch is dead-lettered alone; every other record is applied once", async () => {
    const { schema, topic } = await freshEffects(1);
    const keys = range('r', 40);
    await producer.send(topic, relayed(keys, 1));
    const apply = effectBatchHandler(schema);
    let calls = 0;
    const consumer = await startConsumer({
      schema,
      topics: [topic],
      maxAttempts: 2,
      batchHandler: async (records, tx) => {
        calls++;
        await apply(records, tx); // written, then rolled back when the call throws
        if (records.some((r) => r.value!.toString() === 'r23')) throw new Error('ledger rejected r23');
      },
    });
    await waitFor(async () => (await effectCounts(pool, schema)).size === keys.length - 1, { timeoutMs: 30_000, message: 'all but the bad record applied' });
    await waitFor(async () => (await pool.query(`select 1 from "${schema}".dead_letters`)).rowCount === 1, { timeoutMs: 30_000, message: 'its dead letter' });
    await consumer.stop();

    const { rows } = await pool.query(`select convert_from(value, 'UTF8') as value, attempts, error from "${schema}".dead_letters`);
    expect(rows).toEqual([{ value: 'r23', attempts: 2, error: expect.stringContaining('ledger rejected r23') }]);
    expect(exactlyOnceReport(await effectCounts(pool, schema), keys.filter((k) => k !== 'r23'))).toEqual({ duplicates: [], missing: [], unexpected: [] });
    // Found by halving: a handful of calls, not one per record.
    expect(calls).toBeLessThan(20);
  });

  it('a dead letter of a batch-handler consumer is replayed through the batch handler, once', async () => {
    const { schema, topic } = await freshEffects(1);
    const keys = range('r', 5);
    await producer.send(topic, relayed(keys, 1));
    const apply = effectBatchHandler(schema);
    let broken = true;
    const consumer = await startConsumer({
      schema,
      topics: [topic],
      maxAttempts: 1,
      batchHandler: async (records, tx) => {
        if (broken && records.some((r) => r.value!.toString() === 'r2')) throw new Error('not yet');
        await apply(records, tx);
      },
    });
    await waitFor(async () => (await effectCounts(pool, schema)).size === 4, { timeoutMs: 30_000 });
    await waitFor(async () => (await pool.query(`select 1 from "${schema}".dead_letters`)).rowCount === 1, { timeoutMs: 30_000 });
    broken = false;
    expect((await consumer.replayDeadLetters()).map((r) => r.status)).toEqual(['replayed']);
    expect(await consumer.replayDeadLetters()).toEqual([]);
    await consumer.stop();
    expect(exactlyOnceReport(await effectCounts(pool, schema), keys)).toEqual({ duplicates: [], missing: [], unexpected: [] });
  });
});

describe('consumer: inbox claims of a batch', () => {
  const { pool, producer, consumers, freshEffects } = useTestServices();

  it('a batch cut short before the poll deadline keeps no inbox claim for the records it did not apply: they are applied after the next poll', { timeout: 90_000 }, async () => {
    const { schema, topic } = await freshEffects(1);
    const keys = range('r', 30);
    await producer.send(topic, relayed(keys, 1));
    const apply = effectHandler(schema);
    const batches: number[] = [];
    const consumer = testConsumer({
      schema,
      topics: [topic],
      // The poll deadline (12 s less a margin) comes while the 30 records (300 ms each) of
      // one fetch run: the batch commits what it applied and stops, the rest follows.
      handlerTimeoutMs: 5_000,
      handler: async (record, tx) => {
        await new Promise((resolve) => setTimeout(resolve, 300)); // a slow handler, not synchronisation
        await apply(record, tx);
      },
    });
    consumer.on('batch', (e) => batches.push(e.applied));
    consumers.push(consumer);
    await consumer.start();
    await waitFor(async () => (await effectCounts(pool, schema)).size === keys.length, { timeoutMs: 60_000, message: 'every record applied' });
    await consumer.stop();

    expect(exactlyOnceReport(await effectCounts(pool, schema), keys)).toEqual({ duplicates: [], missing: [], unexpected: [] });
    expect(batches.filter((n) => n > 0).length).toBeGreaterThanOrEqual(2);
    const { rows } = await pool.query(`select count(*)::int as n from "${schema}".consumer_inbox`);
    expect(rows[0].n).toBe(keys.length);
  });
});
