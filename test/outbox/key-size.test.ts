import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ValidationError } from '../../src/errors.js';
import { enqueue } from '../../src/outbox/enqueue.js';
import { MAX_KEY_BYTES } from '../../src/outbox/key-size.js';
import { freshSchema, inTransaction, testPool } from '../support/db.js';

/** `bytes` bytes of UTF-8 in half as many characters (é is two bytes), plus one ASCII byte when odd. */
function keyOfBytes(bytes: number): string {
  return 'é'.repeat(Math.floor(bytes / 2)) + 'k'.repeat(bytes % 2);
}

describe('the key size limit (MAX_KEY_BYTES)', () => {
  const pool = testPool();
  let schema: string;
  beforeAll(async () => (schema = await freshSchema(pool)));
  afterAll(() => pool.end());

  const count = async () => (await pool.query<{ n: number }>(`select count(*)::int as n from ${schema}.messages`)).rows[0]!.n;

  it('an oversized key is refused by enqueue and by the database, and writes nothing; a key of exactly the limit is accepted by both', async () => {
    const before = await count();
    // Bytes of UTF-8, not characters: 1,025 characters of é are 2,050 bytes.
    const over = keyOfBytes(MAX_KEY_BYTES + 1);
    expect(over.length).toBeLessThan(MAX_KEY_BYTES);
    const refused = await inTransaction(pool, async (client) => {
      const error = await enqueue(client, { topic: 'orders', key: over, payload: 'x' }, { schema }).catch((e: unknown) => e);
      // Refused before any statement: the caller's transaction goes on.
      await enqueue(client, { topic: 'orders', key: 'after', payload: 'x' }, { schema });
      return error;
    });
    expect(refused).toBeInstanceOf(ValidationError);
    expect(refused).toMatchObject({ code: 'INVALID_EVENT', field: 'key' });
    expect((refused as Error).message).toContain(`must be at most ${MAX_KEY_BYTES} bytes of UTF-8 (MAX_KEY_BYTES), got ${MAX_KEY_BYTES + 1}`);
    expect(await count()).toBe(before + 1);

    // Plain SQL, whatever the state written (a dead row would not be claimed, but is refused all the same), and a statement of many rows (refused whole).
    for (const [text, values] of [
      [`insert into ${schema}.messages (topic, key, payload) values ('orders', $1, 'x')`, [over]],
      [`insert into ${schema}.messages (topic, key, payload, state) values ('orders', $1, 'x', 'dead')`, [over]],
      [`insert into ${schema}.messages (topic, key, payload) select 'orders', k, 'x' from unnest($1::text[]) k`, [['fine', 'k'.repeat(1_100_000)]]],
    ] as const) {
      await expect(pool.query(text, [...values]), text).rejects.toMatchObject({ code: '23514', constraint: 'messages_key_size', column: 'key' });
    }
    // A key made longer afterwards is refused too.
    const { rows } = await pool.query(`insert into ${schema}.messages (topic, key, payload) values ('orders', 'short', 'x') returning id::text`);
    await expect(pool.query(`update ${schema}.messages set key = $2 where id = $1`, [rows[0].id, over])).rejects.toMatchObject({ code: '23514', constraint: 'messages_key_size' });
    expect(await count()).toBe(before + 2);

    const limit = keyOfBytes(MAX_KEY_BYTES);
    const [viaEnqueue] = await inTransaction(pool, (client) => enqueue(client, { topic: 'orders', key: limit, payload: 'x' }, { schema }));
    await pool.query(`insert into ${schema}.messages (topic, key, payload) values ('orders', $1, 'x')`, [limit]);
    const { rows: stored } = await pool.query(`select octet_length(key) as bytes from ${schema}.messages where id = $1`, [viaEnqueue]);
    expect(stored[0].bytes).toBe(MAX_KEY_BYTES);
    expect(await count()).toBe(before + 4);
  });

  it('the limit is one number: the trigger and the index of blocking rows say what MAX_KEY_BYTES says', async () => {
    const { rows: trigger } = await pool.query(
      `select pg_get_triggerdef(oid) as def from pg_trigger where tgrelid = $1::regclass and tgname = 'messages_key_size'`,
      [`${schema}.messages`],
    );
    expect(trigger[0].def).toContain(`WHEN ((octet_length(new.key) > ${MAX_KEY_BYTES}))`);
    const { rows: fn } = await pool.query(`select prosrc from pg_proc where oid = $1::regprocedure`, [`${schema}.refuse_oversized_key()`]);
    expect(fn[0].prosrc).toContain(`over the limit of ${MAX_KEY_BYTES} bytes`);
    const { rows: index } = await pool.query(`select indexdef from pg_indexes where schemaname = $1 and indexname = 'messages_blocking_key_idx'`, [schema]);
    expect(index[0].indexdef).toContain(`(octet_length(key) <= ${MAX_KEY_BYTES})`);
  });
});
