import { drizzle } from 'drizzle-orm/node-postgres';
import { eq } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { outboxTables } from '../../src/db/schema.js';
import { OutboxError, ValidationError } from '../../src/errors.js';
import { enqueue } from '../../src/outbox/enqueue.js';
import type { OutboxEvent } from '../../src/outbox/event.js';
import { freshSchema, inTransaction, testPool } from '../support/db.js';

describe('enqueue', () => {
  const pool = testPool();
  let schema: string;
  beforeAll(async () => (schema = await freshSchema(pool)));
  afterAll(() => pool.end());

  async function rowsOf(ids: string[]) {
    const { rows } = await pool.query(`select * from ${schema}.messages where id = any($1::bigint[]) order by id`, [ids]);
    return rows;
  }

  it('a committed pg transaction leaves the row, with defaults filled in', async () => {
    const ids = await inTransaction(pool, (client) =>
      enqueue(
        client,
        {
          topic: 'orders',
          key: 'order-1',
          payload: { total: 42 },
          headers: { source: 'test' },
          eventType: 'OrderPlaced',
          aggregateType: 'order',
          aggregateId: '1',
          schemaVersion: 2,
          traceparent: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01',
        },
        { schema },
      ),
    );
    expect(ids).toHaveLength(1);
    const [row] = await rowsOf(ids);
    expect(row).toMatchObject({
      topic: 'orders',
      key: 'order-1',
      headers: { source: 'test' },
      event_type: 'OrderPlaced',
      aggregate_type: 'order',
      aggregate_id: '1',
      schema_version: 2,
      state: 'pending',
      attempts: 0,
      sent_at: null,
    });
    expect(JSON.parse(row.payload.toString())).toEqual({ total: 42 });
  });

  it('a rolled-back pg transaction leaves no outbox row', async () => {
    let ids: string[] = [];
    await expect(
      inTransaction(pool, async (client) => {
        ids = await enqueue(client, { topic: 'orders', key: 'k', payload: 'x' }, { schema });
        throw new Error('business rule failed');
      }),
    ).rejects.toThrow('business rule failed');
    expect(ids).toHaveLength(1);
    expect(await rowsOf(ids)).toHaveLength(0);
  });

  it('enlists in a drizzle transaction: committed rows stay, rolled-back rows vanish', async () => {
    const db = drizzle(pool);
    const { messages } = outboxTables(schema);
    const committed = await db.transaction((tx) => enqueue(tx, { topic: 'orders', key: 'd1', payload: Buffer.from([0, 1, 2]) }, { schema }));
    let rolledBack: string[] = [];
    await expect(
      db.transaction(async (tx) => {
        rolledBack = await enqueue(tx, [{ topic: 'orders', key: 'd2', payload: 'a' }], { schema });
        tx.rollback();
      }),
    ).rejects.toThrow();
    const found = await db.select().from(messages).where(eq(messages.id, BigInt(committed[0]!)));
    expect(found).toHaveLength(1);
    expect(found[0]!.payload).toEqual(Buffer.from([0, 1, 2]));
    expect(await rowsOf(rolledBack)).toHaveLength(0);
  });

  it('a bulk enqueue of 1,000 events is one statement and keeps input order', async () => {
    const events: OutboxEvent[] = Array.from({ length: 1000 }, (_, i) => ({ topic: 'bulk', key: `k${i % 10}`, payload: { i } }));
    const ids = await inTransaction(pool, (client) => enqueue(client, events, { schema }));
    expect(ids).toHaveLength(1000);
    const rows = await rowsOf(ids);
    expect(rows.map((r) => JSON.parse(r.payload.toString()).i)).toEqual(events.map((_, i) => i));
  });

  it('refuses a pg Pool, which cannot enlist in the caller transaction', async () => {
    await expect(enqueue(pool, { topic: 'orders', payload: 'x' }, { schema })).rejects.toMatchObject({ code: 'NOT_IN_TRANSACTION' });
  });

  const invalid: Array<[string, unknown, string]> = [
    ['topic missing', { payload: 'x' }, 'topic'],
    ['topic with a space', { topic: 'bad topic', payload: 'x' }, 'topic'],
    ['topic "."', { topic: '.', payload: 'x' }, 'topic'],
    ['topic of 250 characters', { topic: 'a'.repeat(250), payload: 'x' }, 'topic'],
    ['numeric key', { topic: 't', key: 42, payload: 'x' }, 'key'],
    ['Buffer key', { topic: 't', key: Buffer.from('k'), payload: 'x' }, 'key'],
    ['key with NUL', { topic: 't', key: 'a\u0000b', payload: 'x' }, 'key'],
    ['payload missing', { topic: 't' }, 'payload'],
    ['payload with a cycle', (() => { const o: Record<string, unknown> = {}; o.self = o; return { topic: 't', payload: o }; })(), 'payload'],
    ['payload with a BigInt', { topic: 't', payload: { n: 1n } }, 'payload'],
    ['payload that is a function', { topic: 't', payload: () => 1 }, 'payload'],
    ['oversized payload', { topic: 't', payload: Buffer.alloc(1_000_001) }, 'payload'],
    ['headers not an object', { topic: 't', payload: 'x', headers: ['a'] }, 'headers'],
    ['header value not a string', { topic: 't', payload: 'x', headers: { a: 1 } }, 'headers.a'],
    ['reserved header name', { topic: 't', payload: 'x', headers: { 'outbox-id': '1' } }, 'headers.outbox-id'],
    ['reserved header name outbox-source', { topic: 't', payload: 'x', headers: { 'outbox-source': 'a' } }, 'headers.outbox-source'],
    ['reserved header name in another case', { topic: 't', payload: 'x', headers: { 'Outbox-Source': 'a' } }, 'headers.Outbox-Source'],
    ['empty header name', { topic: 't', payload: 'x', headers: { '': 'v' } }, 'headers'],
    ['empty eventType', { topic: 't', payload: 'x', eventType: '' }, 'eventType'],
    ['non-integer schemaVersion', { topic: 't', payload: 'x', schemaVersion: 1.5 }, 'schemaVersion'],
    ['malformed traceparent', { topic: 't', payload: 'x', traceparent: 'not-a-trace' }, 'traceparent'],
    ['event not an object', 'just a string', 'event'],
  ];

  it.each(invalid)('refuses %s with a typed error naming the field, writing nothing', async (_name, event, field) => {
    const before = await pool.query(`select count(*)::int as n from ${schema}.messages`);
    const error = await inTransaction(pool, (client) =>
      enqueue(client, [{ topic: 'ok', payload: 'fine' }, event as OutboxEvent], { schema }).then(
        () => undefined,
        (err: unknown) => err,
      ),
    );
    expect(error).toBeInstanceOf(ValidationError);
    expect(error).toBeInstanceOf(OutboxError);
    expect((error as ValidationError).code).toBe('INVALID_EVENT');
    expect((error as ValidationError).field).toBe(field);
    expect((error as ValidationError).index).toBe(1);
    expect((error as Error).message).toContain(`events[1].${field}`);
    const after = await pool.query(`select count(*)::int as n from ${schema}.messages`);
    expect(after.rows[0].n).toBe(before.rows[0].n);
  });

  it('honours a configured maximum record size', async () => {
    const error = await inTransaction(pool, (client) =>
      enqueue(client, { topic: 't', payload: 'x'.repeat(600) }, { schema, maxMessageBytes: 500 }).catch((e: unknown) => e),
    );
    expect(error).toMatchObject({ code: 'INVALID_EVENT', field: 'payload' });
    expect((error as Error).message).toMatch(/exceeds the limit of 500 bytes/);
  });

  it('plain SQL can insert with every other column defaulted; CHECK constraints refuse illegal topics', async () => {
    const { rows } = await pool.query(
      `insert into ${schema}.messages (topic, key, payload) values ('orders', 'sql-1', '{"by":"sql"}') returning state, headers, attempts`,
    );
    expect(rows[0]).toEqual({ state: 'pending', headers: {}, attempts: 0 });
    await expect(pool.query(`insert into ${schema}.messages (topic, key, payload) values ('no spaces allowed', 'k', 'x')`)).rejects.toThrow(
      /messages_topic_legal/,
    );
    await expect(pool.query(`insert into ${schema}.messages (topic, payload) values ($1, 'x')`, ['a'.repeat(250)])).rejects.toThrow(
      /messages_topic_legal/,
    );
  });
});
