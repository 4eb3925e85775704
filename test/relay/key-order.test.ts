import type { Message } from '@confluentinc/kafka-javascript';
import type pg from 'pg';
import { describe, expect, it } from 'vitest';
import { inTransaction } from '../support/db.js';
import { missingTopic, headerValue, readTopic } from '../support/kafka.js';
import { expectExactlyOnce, startRelay, waitAllSent, withRelay } from '../support/relay.js';
import { useTestServices } from '../support/services.js';
import { waitFor } from '../support/wait.js';

/** Outbox ids of one key's records, in the order Kafka holds them. */
function idsOfKey(messages: Message[], key: string): number[] {
  return messages
    .filter((m) => m.key?.toString() === key)
    .sort((a, b) => a.partition - b.partition || a.offset - b.offset)
    .map((m) => Number(headerValue(m, 'outbox-id')));
}

async function insertRows(pool: pg.Pool, schema: string, rows: Array<{ topic: string; key: string | null; payload: string }>): Promise<string[]> {
  const { rows: ids } = await pool.query(
    `insert into ${schema}.messages (topic, key, payload)
     select * from unnest($1::text[], $2::text[], $3::bytea[]) returning id::text`,
    [rows.map((r) => r.topic), rows.map((r) => r.key), rows.map((r) => Buffer.from(r.payload))],
  );
  return ids.map((r) => r.id as string);
}

async function stateCounts(pool: pg.Pool, schema: string, ids: string[]): Promise<Record<string, number>> {
  const { rows } = await pool.query(
    `select state || case when held then '/held' else '' end as s, count(*)::int as n from ${schema}.messages where id = any($1::bigint[]) group by 1`,
    [ids],
  );
  return Object.fromEntries(rows.map((r) => [r.s, r.n]));
}

describe('per-key order whatever an operator does to a row', () => {
  const { connection, pool, freshOutbox } = useTestServices({ poolSize: 8 });

  it('a dead row set back to pending by hand is published before the later rows of its key, though its next attempt lies in the future', async () => {
    const { schema, topic } = await freshOutbox(1);
    // One attempt, then dead; the backoff puts its next_attempt_at an hour ahead.
    await withRelay(startRelay(schema, { maxAttempts: 1, rowBackoff: { minMs: 3_600_000, maxMs: 3_600_000 } }), async () => {
      const [dead] = await insertRows(pool, schema, [{ topic: missingTopic(), key: 'k', payload: 'first' }]);
      await waitFor(async () => (await stateCounts(pool, schema, [dead!])).dead === 1, { message: 'first row dead' });
      const later = await insertRows(
        pool,
        schema,
        Array.from({ length: 5 }, (_, i) => ({ topic, key: 'k', payload: `later ${i}` })),
      );
      const [marker] = await insertRows(pool, schema, [{ topic, key: 'other', payload: 'marker' }]);
      await waitFor(async () => (await stateCounts(pool, schema, [marker!])).sent === 1, { message: 'another key flows' });
      // The later rows are held back behind the dead one, however often the shard claims.
      expect(await stateCounts(pool, schema, later)).toEqual({ 'pending/held': 5 });

      // The repair an operator makes by hand: fix the row, set it back to pending.
      const { rows: repaired } = await pool.query(
        `update ${schema}.messages set topic = $2, state = 'pending' where id = $1 returning next_attempt_at > now() + interval '30 minutes' as future`,
        [dead, topic],
      );
      expect(repaired[0].future).toBe(true);
      await waitAllSent(pool, schema);
      const read = await readTopic(connection, topic, 1, { expected: 7 });
      expectExactlyOnce(read, [dead!, ...later, marker!]);
      expect(idsOfKey(read, 'k')).toEqual([dead!, ...later].map(Number));
    });
  });

  it('a row put by hand in failed with a far retry, or flagged held with nothing before it, keeps the later rows of its key behind it', async () => {
    const { schema, topic } = await freshOutbox(1);
    await withRelay(startRelay(schema), async () => {
      // Written stopped in one transaction: the relay sees them only as an operator left them.
      const ids = await inTransaction(pool, async (client) => {
        const { rows } = await client.query(
          `insert into ${schema}.messages (topic, key, payload)
           select $1, k, convert_to(k || ' ' || i, 'UTF8') from unnest(array['failed-key', 'held-key']) k, generate_series(1, 4) i
           order by k, i returning id::text, key`,
          [topic],
        );
        const firstOf = (key: string) => rows.find((r) => r.key === key)!.id as string;
        await client.query(`update ${schema}.messages set state = 'failed', next_attempt_at = now() + interval '1 hour' where id = $1`, [firstOf('failed-key')]);
        await client.query(`update ${schema}.messages set held = true where id = $1`, [firstOf('held-key')]);
        return { failed: rows.filter((r) => r.key === 'failed-key').map((r) => r.id as string), held: rows.filter((r) => r.key === 'held-key').map((r) => r.id as string) };
      });
      // The held row has nothing before it: it is released and its key goes in order.
      await waitFor(async () => (await stateCounts(pool, schema, ids.held)).sent === 4, { message: 'held key sent' });
      // The failed row waits for its hour; the rows after it wait with it.
      const counts = await stateCounts(pool, schema, ids.failed);
      expect(counts.failed).toBe(1);
      expect((counts.pending ?? 0) + (counts['pending/held'] ?? 0)).toBe(3);

      await pool.query(`update ${schema}.messages set next_attempt_at = now() where id = $1`, [ids.failed[0]]);
      await waitAllSent(pool, schema);
      const read = await readTopic(connection, topic, 1, { expected: 8 });
      expectExactlyOnce(read, [...ids.failed, ...ids.held]);
      expect(idsOfKey(read, 'failed-key')).toEqual(ids.failed.map(Number));
      expect(idsOfKey(read, 'held-key')).toEqual(ids.held.map(Number));
    });
  });

  it('rows queued behind a dead row are held, each read once, while other keys flow; repaired, the key goes in order', async () => {
    const { schema, topic } = await freshOutbox(2);
    await withRelay(startRelay(schema, { maxAttempts: 1, shards: 2, batchSize: 200 }), async () => {
      const [dead] = await insertRows(pool, schema, [{ topic: missingTopic(), key: 'blocked', payload: 'first' }]);
      await waitFor(async () => (await stateCounts(pool, schema, [dead!])).dead === 1, { message: 'first row dead' });
      const backlog = await insertRows(pool, schema, Array.from({ length: 3_000 }, (_, i) => ({ topic, key: 'blocked', payload: `b${i}` })));
      const others = await insertRows(pool, schema, Array.from({ length: 400 }, (_, i) => ({ topic, key: `k${i % 20}`, payload: `o${i}` })));
      await waitFor(async () => (await stateCounts(pool, schema, others)).sent === 400, { message: 'other keys sent' });
      await waitFor(async () => (await stateCounts(pool, schema, backlog))['pending/held'] === 3_000, { message: 'backlog held' });
      // Held rows are out of the index the claims walk.
      const { rows: plan } = await pool.query(
        `explain (format json) select id from ${schema}.messages where state in ('pending', 'failed') and not held order by id limit 10`,
      );
      expect(JSON.stringify(plan)).toContain('messages_publishable_idx');
      const { rows: walkable } = await pool.query(`select count(*)::int as n from ${schema}.messages where state in ('pending', 'failed') and not held`);
      expect(walkable[0].n).toBe(0);

      await pool.query(`update ${schema}.messages set topic = $2, state = 'pending' where id = $1`, [dead, topic]);
      await waitAllSent(pool, schema);
      const read = await readTopic(connection, topic, 2, { expected: 3_401 });
      expectExactlyOnce(read, [dead!, ...backlog, ...others]);
      expect(idsOfKey(read, 'blocked')).toEqual([dead!, ...backlog].map(Number));
      const { rows: heldLeft } = await pool.query(`select count(*)::int as n from ${schema}.messages where held`);
      expect(heldLeft[0].n).toBe(0);
    });
  });

  it('a due retry never overtakes an earlier pending row of its key, and a key with two failed rows drains in order', async () => {
    const { schema, topic } = await freshOutbox(1);
    // As an operator or a retry leaves them: "p" pending before a due failed row; "f" two
    // failed rows, then a pending one.
    const ids = await inTransaction(pool, async (client) => {
      const { rows } = await client.query(
        `insert into ${schema}.messages (topic, key, payload, state, attempts, last_error)
         select $1, k, convert_to(k || ' ' || i, 'UTF8'), st, case when st = 'failed' then 1 else 0 end, case when st = 'failed' then 'earlier failure' end
           from (values ('p', 1, 'pending'), ('p', 2, 'failed'), ('p', 3, 'pending'),
                        ('f', 1, 'failed'), ('f', 2, 'failed'), ('f', 3, 'pending')) v(k, i, st)
          order by k, i
         returning id::text, key`,
        [topic],
      );
      return { p: rows.filter((r) => r.key === 'p').map((r) => r.id as string), f: rows.filter((r) => r.key === 'f').map((r) => r.id as string) };
    });
    await withRelay(startRelay(schema), async () => {
      await waitAllSent(pool, schema);
      const read = await readTopic(connection, topic, 1, { expected: 6 });
      expectExactlyOnce(read, [...ids.p, ...ids.f]);
      expect(idsOfKey(read, 'p')).toEqual(ids.p.map(Number));
      expect(idsOfKey(read, 'f')).toEqual(ids.f.map(Number));
    });
  });
});
