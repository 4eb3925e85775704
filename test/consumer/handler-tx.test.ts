import { sql } from 'drizzle-orm';
import { describe, expect, it } from 'vitest';
import { useTestServices } from '../support/services.js';
import { waitFor } from '../support/wait.js';
import type { HandlerTx } from '../../src/consumer/index.js';
import { effectCounts, effectHandler, exactlyOnceReport, relayed } from '../support/consumer.js';


async function deadLetters(pool: import('pg').Pool, schema: string): Promise<{ value: string; error: string; attempts: number }[]> {
  const { rows } = await pool.query(`select convert_from(value, 'UTF8') as value, error, attempts from "${schema}".dead_letters order by "offset"`);
  return rows;
}

describe('consumer: the transaction a handler gets', () => {
  const { pool, producer, freshEffects, startConsumer } = useTestServices();

  it("a nested drizzle transaction is a savepoint: a failing record keeps none of its effects and each retry really runs", async () => {
    const { schema, topic } = await freshEffects(1);
    const calls = new Map<string, number>();
    const consumer = await startConsumer({
      schema,
      topics: [topic],
      maxAttempts: 3,
      handler: async (record, tx) => {
        const value = record.value!.toString();
        calls.set(value, (calls.get(value) ?? 0) + 1);
        const insert = (db: typeof tx.drizzle, key: string) =>
          db.execute(sql`insert into ${sql.identifier(schema)}.effects (record_key, topic, partition, "offset") values (${key}, ${record.topic}, ${record.partition}, ${record.offset})`);
        await tx.drizzle.transaction((inner) => insert(inner, value));
        // A nested transaction that fails is rolled back to its savepoint; the handler goes on.
        await tx.drizzle
          .transaction(async (inner) => {
            await insert(inner, `${value}-undone`);
            throw new Error('nested failure');
          })
          .catch(() => undefined);
        if (value === 'bad') throw new Error('the record itself fails');
      },
    });
    await producer.send(topic, relayed(['a', 'bad', 'c']));
    await waitFor(async () => (await deadLetters(pool, schema)).length === 1 && (await effectCounts(pool, schema)).has('c'), { timeoutMs: 30_000 });
    await consumer.stop();
    expect(exactlyOnceReport(await effectCounts(pool, schema), ['a', 'c'])).toEqual({ duplicates: [], missing: [], unexpected: [] });
    expect((await deadLetters(pool, schema))[0]).toMatchObject({ value: 'bad', attempts: 3 });
    // Once in the batch, then three attempts alone: none was skipped as already applied.
    expect(calls.get('bad')).toBe(4);
    const inbox = await pool.query(`select outbox_id from "${schema}".consumer_inbox order by outbox_id`);
    expect(inbox.rows.map((r) => r.outbox_id)).toEqual(['1', '3']);
  });

  it("a handler's COMMIT, ROLLBACK or BEGIN is refused with a typed error and dead-letters the record at once, never committing the batch early", async () => {
    const { schema, topic } = await freshEffects(1);
    const refusals: string[] = [];
    // What each record's handler tries, after writing its effect.
    const control: Record<string, (tx: HandlerTx) => Promise<unknown>> = {
      commits: (tx) => tx.query('commit'),
      'rolls-back': (tx) => tx.client.query('/* undo */ ROLLBACK'),
      begins: (tx) => tx.drizzle.execute(sql`begin`),
      'commits-in-a-batch': (tx) => tx.query('select 1; commit'),
    };
    const apply = effectHandler(schema);
    const consumer = await startConsumer({
      schema,
      topics: [topic],
      maxAttempts: 5,
      handler: async (record, tx) => {
        await apply(record, tx);
        const attempt = control[record.value!.toString()];
        if (!attempt) return;
        const run = () => attempt(tx);
        // Even a handler that swallows the refusal does not get its record applied.
        // (drizzle wraps the error: the refusal is its cause.)
        await run().catch((err: { code?: string; cause?: { code?: string } }) => refusals.push(err.code ?? err.cause?.code ?? 'none'));
      },
    });
    const values = ['ok-1', 'commits', 'rolls-back', 'begins', 'commits-in-a-batch', 'ok-2'];
    const delivered = await producer.send(topic, relayed(values));
    await waitFor(async () => (await deadLetters(pool, schema)).length === 4 && (await effectCounts(pool, schema)).has('ok-2'), { timeoutMs: 30_000 });
    await consumer.stop();
    expect(exactlyOnceReport(await effectCounts(pool, schema), ['ok-1', 'ok-2'])).toEqual({ duplicates: [], missing: [], unexpected: [] });
    const dead = await deadLetters(pool, schema);
    expect(dead.map((d) => d.value)).toEqual(['commits', 'rolls-back', 'begins', 'commits-in-a-batch']);
    for (const d of dead) {
      expect(d.attempts).toBe(1);
      expect(d.error).toContain('TX_CONTROL_REFUSED');
    }
    expect(new Set(refusals)).toEqual(new Set(['TX_CONTROL_REFUSED']));
    const stored = await pool.query(`select next_offset::int as n from "${schema}".consumer_offsets`);
    expect(stored.rows[0].n).toBe(delivered.at(-1)!.offset + 1);
  });
});
