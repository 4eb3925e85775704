/**
 * A row the database cannot index or mark must block nothing but its own key. Before
 * migration 0014 a row with a key over about 2.7 KB (incompressible) inserted fine, but
 * marking it failed or dead had to add its key to the index of blocking rows and failed
 * (SQLSTATE 54000); the shard retried its batch forever, every other key of the shard with
 * it. Each test runs one shard, so a row that blocked more than its key would block all.
 */
import { randomBytes } from 'node:crypto';
import type pg from 'pg';
import { describe, expect, it } from 'vitest';
import { enqueue } from '../../src/outbox/enqueue.js';
import { MAX_KEY_BYTES } from '../../src/outbox/key-size.js';
import { inTransaction } from '../support/db.js';
import { missingTopic, headerValue, readTopic } from '../support/kafka.js';
import { expectExactlyOnce, startRelay, withRelay, expectPublishedOnce } from '../support/relay.js';
import { useTestServices } from '../support/services.js';
import { waitFor } from '../support/wait.js';

interface Row {
  topic: string;
  key: string;
  payload: string;
  state?: 'pending' | 'failed';
}

/**
 * Inserts rows as a session that bypasses the outbox's triggers (as pg_restore
 * --disable-triggers or a logical replica's apply do): how rows written before migration
 * 0014 look, the key size trigger notwithstanding.
 */
async function insertPastTriggers(pool: pg.Pool, schema: string, rows: Row[]): Promise<string[]> {
  return inTransaction(pool, async (client) => {
    await client.query(`set local session_replication_role = replica`);
    const { rows: ids } = await client.query(
      `insert into ${schema}.messages (topic, key, payload, state, attempts)
       select t, k, convert_to(p, 'UTF8'), s, case when s = 'failed' then 1 else 0 end
         from unnest($1::text[], $2::text[], $3::text[], $4::text[]) with ordinality as r(t, k, p, s, n)
        order by n
       returning id::text`,
      [rows.map((r) => r.topic), rows.map((r) => r.key), rows.map((r) => r.payload), rows.map((r) => r.state ?? 'pending')],
    );
    return ids.map((r) => r.id as string);
  });
}

async function rowsById(pool: pg.Pool, schema: string, ids: string[]) {
  const { rows } = await pool.query(
    `select id::text, state, held, attempts, last_error, octet_length(key) as key_bytes from ${schema}.messages where id = any($1::bigint[]) order by id`,
    [ids],
  );
  return new Map(rows.map((r) => [r.id as string, r]));
}

describe('rows the relay cannot index or mark block only themselves', () => {
  const { connection, pool, freshOutbox } = useTestServices({ poolSize: 8 });

  it('a row with an oversized key already in the table is parked with its reason while every other key flows', async () => {
    const { schema, topic } = await freshOutbox(1);
    const missing = missingTopic();
    // Random bytes as base64: incompressible, so PostgreSQL could not have squeezed them into an index entry.
    const random = (chars: number) => randomBytes(Math.ceil((chars * 3) / 4)).toString('base64').slice(0, chars);
    const longKey = random(4_000);
    const hugeKey = random(1_100_000);
    const justOver = random(MAX_KEY_BYTES + 1);
    const atLimit = random(MAX_KEY_BYTES);
    const rows: Array<Row & { name: string }> = [
      { name: 'good a 1', topic, key: 'good-a', payload: 'a 1' },
      // The bad-input corpus's finding: a 4,000-character key to a topic that does not exist.
      { name: 'long key, missing topic', topic: missing, key: longKey, payload: 'long 1' },
      { name: 'long key, behind it', topic, key: longKey, payload: 'long 2' },
      { name: 'good b 1', topic, key: 'good-b', payload: 'b 1' },
      // Kafka itself would take this record: the outbox still cannot keep its key in order.
      { name: 'key one byte over the limit', topic, key: justOver, payload: 'over' },
      { name: 'key of 1.1 MB', topic, key: hugeKey, payload: 'huge' },
      // Compressible, so it did fit the old index as a failed row, due for its retry.
      { name: 'long compressible key, failed before', topic, key: 'c'.repeat(3_000), payload: 'compressible', state: 'failed' },
      { name: 'key of exactly the limit', topic, key: atLimit, payload: 'at limit' },
      { name: 'good a 2', topic, key: 'good-a', payload: 'a 2' },
      { name: 'good b 2', topic, key: 'good-b', payload: 'b 2' },
    ];
    const ids = await insertPastTriggers(pool, schema, rows);
    const id = (name: string) => ids[rows.findIndex((r) => r.name === name)]!;
    const oversized = rows.filter((r) => Buffer.byteLength(r.key) > MAX_KEY_BYTES).map((r) => id(r.name));
    const good = ids.filter((i) => !oversized.includes(i));
    expect(oversized).toHaveLength(5);

    await withRelay(startRelay(schema, { shards: 1, maxAttempts: 2 }), async () => {
      await waitFor(
        async () => {
          const state = await rowsById(pool, schema, ids);
          return good.every((i) => state.get(i)?.state === 'sent') && oversized.every((i) => state.get(i)?.state === 'dead');
        },
        { timeoutMs: 30_000, message: 'oversized rows dead, every other row sent' },
      );
      // Rows written afterwards, through enqueue, flow too.
      const [later] = await inTransaction(pool, (client) => enqueue(client, { topic, key: 'good-a', payload: 'a 3' }, { schema }));
      good.push(later!);
      await waitFor(async () => (await rowsById(pool, schema, [later!])).get(later!)?.state === 'sent', { message: 'a later row sent' });
    });

    const state = await rowsById(pool, schema, ids);
    for (const i of oversized) {
      const row = state.get(i)!;
      // Dead at once, with what it was and what to do, and not held: nothing indexed holds it back.
      expect(row).toMatchObject({ state: 'dead', held: false });
      expect(row.last_error).toContain(`key of ${row.key_bytes} bytes exceeds the limit of ${MAX_KEY_BYTES} bytes (MAX_KEY_BYTES)`);
    }
    expect(state.get(id('long compressible key, failed before'))!.attempts).toBe(2);
    const read = await expectPublishedOnce(connection, topic, 1, good, { expected: good.length, settleMs: 500 });
    expect(read.map((m) => m.value?.toString())).toEqual(['a 1', 'b 1', 'at limit', 'a 2', 'b 2', 'a 3']);
    expect(read.every((m) => (m.key?.length ?? 0) <= MAX_KEY_BYTES)).toBe(true);
  });

  it('a row the database refuses to mark is set aside with the later rows of its key, every other key flows, and it goes on once the cause is gone', async () => {
    const { schema, topic } = await freshOutbox(1);
    const missing = missingTopic();
    const rows: Array<Row & { name: string }> = [
      { name: 'good 1', topic, key: 'good', payload: 'good 1' },
      { name: 'poison', topic: missing, key: 'poison', payload: 'poison' },
      { name: 'behind poison', topic, key: 'poison', payload: 'behind poison' },
      { name: 'good 2', topic, key: 'good', payload: 'good 2' },
      { name: 'other', topic, key: 'other', payload: 'other' },
    ];
    const ids = await insertPastTriggers(pool, schema, rows);
    const [, poison, behind] = ids as [string, string, string];
    // A constraint added by hand that an older row breaks: PostgreSQL checks it, NOT VALID as it is,
    // on every update of that row, so the relay cannot mark the row failed (SQLSTATE 23514).
    await pool.query(`alter table ${schema}.messages add constraint by_hand check (topic <> '${missing}') not valid`);

    const errors: unknown[] = [];
    const relay = await startRelay(schema, { shards: 1, maxAttempts: 2, rowBackoff: { minMs: 200, maxMs: 400 } });
    relay.events.on('error', (e) => errors.push(e.error));
    try {
      const good = [ids[0]!, ids[3]!, ids[4]!];
      await waitFor(async () => [...(await rowsById(pool, schema, good)).values()].every((r) => r.state === 'sent'), {
        timeoutMs: 30_000,
        message: 'the rows of the other keys sent',
      });
      await waitFor(() => errors.some((e) => (e as { code?: string }).code === '23514'), { message: 'the refused mark reported' });
      // Neither the refused row nor the row behind it went: order per key holds.
      let state = await rowsById(pool, schema, [poison, behind]);
      expect(state.get(poison)).toMatchObject({ state: 'pending', attempts: 0 });
      expect(state.get(behind)).toMatchObject({ state: 'pending' });

      // The operator drops the constraint: after its backoff the row is marked as any failing row, and holds its key.
      await pool.query(`alter table ${schema}.messages drop constraint by_hand`);
      await waitFor(async () => (await rowsById(pool, schema, [poison])).get(poison)?.state === 'dead', { timeoutMs: 30_000, message: 'the row marked dead' });
      state = await rowsById(pool, schema, [poison, behind]);
      expect(state.get(poison)!.last_error).toContain(`unknown topic ${missing}`);
      expect(state.get(behind)).toMatchObject({ state: 'pending' });
    } finally {
      await relay.stop();
    }
    const read = await readTopic(connection, topic, 1, { expected: 3, settleMs: 500 });
    expectExactlyOnce(read, [ids[0]!, ids[3]!, ids[4]!]);
    expect(read.map((m) => headerValue(m, 'outbox-id'))).toEqual([ids[0], ids[3], ids[4]]);
  });
});
