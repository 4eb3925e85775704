import type { Message } from '@confluentinc/kafka-javascript';
import type pg from 'pg';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { decodeHeaders } from '../../src/consumer/record.js';
import { RESERVED_HEADERS } from '../../src/outbox/event.js';
import { createRelay } from '../../src/relay/relay.js';
import { freshSchema } from '../support/db.js';
import { freshTopic, headerValue, readTopic } from '../support/kafka.js';
import { startRelay, testRelayOptions, waitAllSent, withRelay } from '../support/relay.js';
import { useTestServices } from '../support/services.js';

async function sourceOf(pool: pg.Pool, schema: string): Promise<string> {
  const { rows } = await pool.query(`select source_id from ${schema}.outbox_source`);
  expect(rows).toHaveLength(1);
  return rows[0].source_id as string;
}

/** Every header of a record as [name, value] pairs, in record order. */
function headerPairs(message: Message): [string, string][] {
  return (message.headers ?? []).flatMap((header) => Object.entries(header).map(([name, value]): [string, string] => [name, String(value)]));
}

/** Writes a row as if it predated migration 0005: with the header rule switched off for the insert. */
async function insertUnchecked(pool: pg.Pool, schema: string, topic: string, headers: Record<string, string>): Promise<string> {
  const client = await pool.connect();
  try {
    await client.query('begin');
    await client.query(`alter table ${schema}.messages disable trigger messages_headers_unreserved`);
    const { rows } = await client.query(
      `insert into ${schema}.messages (topic, key, payload, headers, event_type) values ($1, 'k', 'old row', $2::jsonb, 'OrderPlaced') returning id::text, created_at`,
      [topic, JSON.stringify(headers)],
    );
    await client.query(`alter table ${schema}.messages enable trigger messages_headers_unreserved`);
    await client.query('commit');
    return rows[0].id as string;
  } catch (err) {
    await client.query('rollback');
    throw err;
  } finally {
    client.release();
  }
}

describe('the headers the relay sets', () => {
  const { connection, pool, admin, freshOutbox } = useTestServices({ poolSize: 8 });

  it("a row's own headers never override the relay's identity headers", async () => {
    const { schema, topic } = await freshOutbox(1);
    const source = await sourceOf(pool, schema);
    const forged = {
      'outbox-id': 'forged-id',
      'Outbox-Source': 'forged-source',
      'created-at': '1999-01-01T00:00:00.000Z',
      'x-tenant': 'acme',
    };
    const id = await insertUnchecked(pool, schema, topic, forged);
    const { rows } = await pool.query(`select created_at from ${schema}.messages where id = $1`, [id]);
    const createdAt = (rows[0].created_at as Date).toISOString();

    const logLines: string[] = [];
    const logger = pino({ level: 'warn' }, { write: (line: string) => logLines.push(line) });
    await withRelay(startRelay(schema, { logger }), async () => {
      // Marked sent: the rule added later does not stand in the way of the relay's updates.
      await waitAllSent(pool, schema);
    });
    const [record, ...more] = await readTopic(connection, topic, 1, { expected: 1 });
    expect(more).toHaveLength(0);
    const pairs = headerPairs(record!);
    const reservedOnRecord = pairs.filter(([name]) => RESERVED_HEADERS.has(name.toLowerCase()));
    // Exactly one of each, spelled as the relay spells it, with the relay's values.
    expect(reservedOnRecord.sort()).toEqual(
      [
        ['outbox-id', id],
        ['outbox-source', source],
        ['created-at', createdAt],
        ['event-type', 'OrderPlaced'],
      ].sort(),
    );
    expect(headerValue(record!, 'x-tenant')).toBe('acme');
    const decoded = decodeHeaders(record!.headers ?? []);
    expect({ outboxId: decoded.outboxId, source: decoded.source, createdAt: decoded.createdAt?.toISOString() }).toEqual({
      outboxId: id,
      source,
      createdAt,
    });

    // One warning for the row, naming the dropped headers and never their values.
    const warnings = logLines.map((line) => JSON.parse(line) as Record<string, unknown>).filter((l) => String(l.msg).includes('dropped'));
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatchObject({ id });
    expect([...(warnings[0]!.headers as string[])].sort()).toEqual(['outbox-id', 'Outbox-Source', 'created-at'].sort());
    for (const value of Object.values(forged)) expect(logLines.join('\n')).not.toContain(value);
  });

  it('a plain-SQL insert with a reserved header name is refused by the database', async () => {
    const schema = await freshSchema(pool);
    // The database's list and HEADER are the same list.
    const { rows } = await pool.query(`select ${schema}.reserved_header_names() as names`);
    expect([...(rows[0].names as string[])].sort()).toEqual([...RESERVED_HEADERS].sort());

    const insert = (headers: Record<string, string>) =>
      pool.query(`insert into ${schema}.messages (topic, payload, headers) values ('orders', 'x', $1::jsonb)`, [JSON.stringify(headers)]);
    const variants = [...RESERVED_HEADERS].flatMap((name) => [name, name.toUpperCase(), name.replace(/(^|-)([a-z])/g, (_, dash: string, c: string) => dash + c.toUpperCase())]);
    for (const name of variants) {
      await expect(insert({ 'x-fine': '1', [name]: 'forged' }), name).rejects.toMatchObject({
        code: '23514',
        constraint: 'messages_headers_unreserved',
      });
    }
    await expect(pool.query(`insert into ${schema}.messages (topic, payload) values ('orders', 'x')`)).resolves.toMatchObject({ rowCount: 1 });
    await expect(insert({ 'x-tenant': 'acme', 'outbox-identity': 'a look-alike, not reserved' })).resolves.toMatchObject({ rowCount: 1 });
    // Nor can an update put one in.
    await expect(pool.query(`update ${schema}.messages set headers = headers || '{"Outbox-Id": "1"}'::jsonb`)).rejects.toMatchObject({ code: '23514' });
    const { rows: stored } = await pool.query(`select headers from ${schema}.messages order by id`);
    expect(stored.map((r) => r.headers)).toEqual([{}, { 'x-tenant': 'acme', 'outbox-identity': 'a look-alike, not reserved' }]);
  });

  it('records of two outbox databases carry distinct source ids, stable across relay restarts', async () => {
    const [a, b] = [await freshSchema(pool), await freshSchema(pool)];
    const [sourceA, sourceB] = [await sourceOf(pool, a), await sourceOf(pool, b)];
    expect(sourceA).not.toBe(sourceB);
    const topic = await freshTopic(admin, 2);
    const insert = (schema: string, label: string, n: number) =>
      pool.query(`insert into ${schema}.messages (topic, key, payload) select $1, 'k' || (i % 3), convert_to($2::text || i, 'UTF8') from generate_series(1, $3::int) i`, [
        topic,
        label,
        n,
      ]);
    const optionsA = testRelayOptions(a);
    let relayA = createRelay(optionsA);
    await relayA.start();
    const relayB = await startRelay(b);
    try {
      await insert(a, 'a-', 10);
      await insert(b, 'b-', 10);
      await Promise.all([waitAllSent(pool, a), waitAllSent(pool, b)]);

      await relayA.stop();
      relayA = createRelay(optionsA);
      await relayA.start();
      await insert(a, 'a-later-', 5);
      await waitAllSent(pool, a);
    } finally {
      await Promise.all([relayA.stop(), relayB.stop()]);
    }

    const read = await readTopic(connection, topic, 2, { expected: 25 });
    expect(read).toHaveLength(25);
    const sourceByLabel = new Map<string, Set<string | undefined>>();
    for (const record of read) {
      const label = /^(a-later-|a-|b-)/.exec(record.value!.toString())![1]!;
      const sources = sourceByLabel.get(label) ?? new Set();
      sources.add(headerValue(record, 'outbox-source'));
      sourceByLabel.set(label, sources);
    }
    expect(Object.fromEntries([...sourceByLabel].map(([label, sources]) => [label, [...sources]]))).toEqual({
      'a-': [sourceA],
      'a-later-': [sourceA],
      'b-': [sourceB],
    });
    // The two outboxes reuse the same ids: only the source tells their events apart.
    const events = new Set(read.map((r) => `${headerValue(r, 'outbox-source')}/${headerValue(r, 'outbox-id')}`));
    const ids = new Set(read.map((r) => headerValue(r, 'outbox-id')));
    expect(events.size).toBe(25);
    expect(ids.size).toBe(15);
  });

  it("a relay does not start without its outbox's source id, and says how to fix it", async () => {
    const schema = await freshSchema(pool);
    await pool.query(`delete from ${schema}.outbox_source`);
    await expect(createRelay(testRelayOptions(schema)).start()).rejects.toMatchObject({
      code: 'MIGRATION_FAILED',
      message: expect.stringMatching(/outbox_source has no row.*outbox-relay migrate/),
    });
    await pool.query(`drop table ${schema}.outbox_source`);
    await expect(createRelay(testRelayOptions(schema)).start()).rejects.toMatchObject({
      code: 'MIGRATION_FAILED',
      message: expect.stringMatching(/no outbox_source table.*outbox-relay migrate/),
    });
  });
});
