/**
 * The bad-input corpus (test/bad-input/), plain SQL inserts: what this entry point must refuse, each
 * case checking (a) the refusal is typed (an OutboxError code, a SQLSTATE and constraint, a
 * CLI exit code 2 with its message, an HTTP status with a JSON error) or the row/record is
 * parked with its reason, and (b) nothing is lost: the refused write changed nothing, and
 * good input through the same entry point still flows, end to end.
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { HEADER } from '../../src/outbox/event.js';
import type { Relay } from '../../src/relay/relay.js';
import { cli } from '../support/cli.js';
import { freshSchema } from '../support/db.js';
import { freshTopic, headerValue, readTopic } from '../support/kafka.js';
import { expectExactlyOnce, startRelay } from '../support/relay.js';
import { useTestServices } from '../support/services.js';
import { waitFor } from '../support/wait.js';
import { badInputChecks } from '../support/bad-input.js';

const services = useTestServices({ poolSize: 8 });
const { connection, pool, admin } = services;
const { count } = badInputChecks(services);

// ---------------------------------------------------------------------------------------
// plain SQL, past enqueue
// ---------------------------------------------------------------------------------------

type Columns = Partial<Record<'topic' | 'key' | 'payload' | 'headers' | 'state' | 'schema_version' | 'attempts', unknown>>;

interface SqlRefusal {
  name: string;
  columns: Columns;
  sqlstate: string;
  constraint?: string;
}

const SQL_REFUSALS: SqlRefusal[] = [
  { name: 'a topic with a space', columns: { topic: 'orders paid' }, sqlstate: '23514', constraint: 'messages_topic_legal' },
  { name: 'an empty topic', columns: { topic: '' }, sqlstate: '23514', constraint: 'messages_topic_legal' },
  { name: 'a topic of 250 characters', columns: { topic: 'a'.repeat(250) }, sqlstate: '23514', constraint: 'messages_topic_legal' },
  { name: 'headers that are a JSON array', columns: { headers: '["tenant"]' }, sqlstate: '23514', constraint: 'messages_headers_object' },
  { name: 'headers that are a JSON string', columns: { headers: '"tenant"' }, sqlstate: '23514', constraint: 'messages_headers_object' },
  { name: 'headers that are not JSON', columns: { headers: '{tenant: a' }, sqlstate: '22P02' },
  { name: 'a reserved header name (Outbox-Id, any case)', columns: { headers: '{"Outbox-Id": "1"}' }, sqlstate: '23514', constraint: 'messages_headers_unreserved' },
  { name: 'an unknown state', columns: { state: 'published' }, sqlstate: '23514', constraint: 'messages_state_known' },
  { name: 'a schema_version of 0', columns: { schema_version: 0 }, sqlstate: '23514', constraint: 'messages_schema_version_positive' },
  { name: 'negative attempts', columns: { attempts: -1 }, sqlstate: '23514', constraint: 'messages_attempts_nonnegative' },
  { name: 'a key over 2,048 bytes', columns: { key: 'k'.repeat(2_049) }, sqlstate: '23514', constraint: 'messages_key_size' },
  { name: 'a key of 1.1 MB (random, incompressible)', columns: { key: randomBytes(825_000).toString('base64') }, sqlstate: '23514', constraint: 'messages_key_size' },
];

interface SqlParked {
  name: string;
  columns: Columns;
  attempts: number;
  error: RegExp;
}

const SQL_PARKED: SqlParked[] = [
  { name: 'a topic that does not exist', columns: { topic: 'no-such-topic-bad-input' }, attempts: 2, error: /unknown topic no-such-topic-bad-input/ },
  { name: 'a payload too large for any record', columns: { payload: Buffer.alloc(1_100_000, 1) }, attempts: 1, error: /record of \d+ bytes .* exceeds the limit of 1000000 bytes/ },
  { name: 'headers too large for any record', columns: { headers: JSON.stringify({ note: 'n'.repeat(1_100_000) }) }, attempts: 1, error: /exceeds the limit of 1000000 bytes/ },
  { name: 'a header value that is a number', columns: { headers: '{"tenant": 7}' }, attempts: 1, error: /header "tenant" is a number, not a string/ },
  { name: 'a header value that is an object', columns: { headers: '{"tenant": {"id": 7}}' }, attempts: 1, error: /header "tenant" is an object, not a string/ },
  { name: 'a header value that is null', columns: { headers: '{"tenant": null}' }, attempts: 1, error: /header "tenant" is null, not a string/ },
];

describe('plain SQL inserts: what Kafka would refuse is refused or parked, and other keys flow', () => {
  let schema: string;
  let topic: string;
  let relay: Relay | undefined;
  const parked = new Map<string, { bad: string; behind: string; next: string }>();
  const good: string[] = [];

  async function insertRow(columns: Columns): Promise<string> {
    const all: Columns = { topic, key: 'k', payload: Buffer.from('x'), ...columns };
    const names = Object.keys(all);
    const casts = names.map((n, i) => `$${i + 1}${n === 'headers' ? '::jsonb' : ''}`);
    const { rows } = await pool.query(`insert into ${schema}.messages (${names.join(', ')}) values (${casts.join(', ')}) returning id::text`, Object.values(all));
    return rows[0].id as string;
  }

  beforeAll(async () => {
    schema = await freshSchema(pool);
    topic = await freshTopic(admin, 1);
    // One shard: a bad row that blocked more than its key would block every good row.
    for (const [i, c] of SQL_PARKED.entries()) {
      good.push(await insertRow({ key: `good-${i}`, payload: `good before ${i}` }));
      const bad = await insertRow({ ...c.columns, key: `parked-${i}` });
      const behind = await insertRow({ key: `parked-${i}`, payload: `behind ${i}` });
      const next = await insertRow({ key: `good-${i}`, payload: `good after ${i}` });
      good.push(next);
      parked.set(c.name, { bad, behind, next });
    }
    relay = await startRelay(schema, { shards: 1, maxAttempts: 2, rowBackoff: { minMs: 100, maxMs: 200 } });
    await waitFor(async () => (await count(`${schema}.messages where state = 'dead'`)) === SQL_PARKED.length && (await count(`${schema}.messages where state = 'sent'`)) === good.length, {
      timeoutMs: 30_000,
      message: 'bad rows dead, good rows sent',
    });
  });
  afterAll(async () => {
    await relay?.stop();
  });

  it.each(SQL_REFUSALS)('an INSERT with $name is refused ($sqlstate) and writes nothing', async (c) => {
    const before = await count(`${schema}.messages`);
    const error = await insertRow(c.columns).then(() => undefined, (err: unknown) => err);
    expect(error).toMatchObject({ code: c.sqlstate, ...(c.constraint ? { constraint: c.constraint } : {}) });
    expect(await count(`${schema}.messages`)).toBe(before);
  });

  it.each(SQL_PARKED)('a row with $name is parked dead with its reason, holds back only its own key, and the next row of another key is sent', async (c) => {
    const { bad, behind, next } = parked.get(c.name)!;
    const { rows } = await pool.query(`select id::text, state, attempts, last_error from ${schema}.messages where id = any($1::bigint[]) order by id`, [[bad, behind, next]]);
    expect(rows[0]).toMatchObject({ id: bad, state: 'dead', attempts: c.attempts });
    expect(rows[0].last_error).toMatch(c.error);
    expect(rows[1]).toMatchObject({ id: behind, state: 'pending', attempts: 0, last_error: null });
    expect(rows[2]).toMatchObject({ id: next, state: 'sent' });
  });

  it('a row whose headers became all strings again is published once it is retried; the good rows went exactly once', async () => {
    const bad = parked.get('a header value that is a number')!;
    await pool.query(`update ${schema}.messages set headers = '{"tenant": "7"}' where id = $1`, [bad.bad]);
    const retried = await cli('retry', bad.bad, '--reason', 'header fixed by hand', '--schema', schema);
    expect(retried.code).toBe(0);
    await waitFor(async () => (await count(`${schema}.messages where id = any($1::bigint[]) and state = 'sent'`, [[bad.bad, bad.behind]])) === 2, { message: 'fixed row and its follower sent' });
    const read = await readTopic(connection, topic, 1, { expected: good.length + 2, settleMs: 500 });
    expectExactlyOnce(read, [...good, bad.bad, bad.behind]);
    expect(headerValue(read.find((m) => headerValue(m, HEADER.outboxId) === bad.bad)!, 'tenant')).toBe('7');
  });
});
