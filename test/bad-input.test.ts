/**
 * The bad-input corpus: every entry point of the product given what it must refuse, each
 * case checking (a) the refusal is typed (an OutboxError code, a SQLSTATE and constraint, a
 * CLI exit code 2 with its message, an HTTP status with a JSON error) or the row/record is
 * parked with its reason, and (b) nothing is lost: the refused write changed nothing, and
 * good input through the same entry point still flows, end to end.
 */
import type { MessageHeader } from '@confluentinc/kafka-javascript';
import { randomBytes } from 'node:crypto';
import { drizzle } from 'drizzle-orm/node-postgres';
import { request } from 'node:http';
import type { AddressInfo } from 'node:net';
import type pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Consumer, RecordHandler } from '../src/consumer/index.js';
import { OutboxError, type OutboxErrorCode } from '../src/errors.js';
import { TransactionalProducer } from '../src/kafka/producer.js';
import { createLogger } from '../src/log.js';
import { enqueue, type EnqueueOptions } from '../src/outbox/enqueue.js';
import { HEADER, type OutboxEvent } from '../src/outbox/event.js';
import { serveRelayHttp } from '../src/relay/http.js';
import type { Relay } from '../src/relay/relay.js';
import { cli } from './support/cli.js';
import { freshSchema, inTransaction } from './support/db.js';
import { freshTopic, headerValue, readTopic } from './support/kafka.js';
import { expectExactlyOnce, startRelay, waitAllSent, withRelay } from './support/relay.js';
import { useTestServices } from './support/services.js';
import { uniqueName, waitFor } from './support/wait.js';
import { testConsumer } from './support/consumer.js';

const { connection, pool, admin, consumers } = useTestServices({ poolSize: 8 });

async function count(sql: string, values: unknown[] = []): Promise<number> {
  return (await pool.query<{ n: number }>(`select count(*)::int as n from ${sql}`, values)).rows[0]!.n;
}

/** What a refused operation must leave as it was: rows' states, offsets, dead letters, the audit trail. */
async function snapshot(schema: string) {
  const rows = async (sql: string) => (await pool.query(sql)).rows;
  return {
    messages: await rows(`select id::text, topic, state, attempts, last_error, next_attempt_at from ${schema}.messages order by id`),
    offsets: await rows(`select group_id, topic, partition, next_offset::text from ${schema}.consumer_offsets order by 1, 2, 3`),
    deadLetters: await rows(`select id::text, replay_requested_at, discarded_at, replayed_at from ${schema}.dead_letters order by id`),
    audit: await count(`${schema}.operator_actions`),
  };
}

/** A dead row whose topic was missing, a row of its key held behind it, a sent row; a consumer group with an offset and a dead letter. */
async function repairFixture(schema: string, topic: string) {
  const insert = async (sql: string, values: unknown[]) => (await pool.query(`${sql} returning id::text`, values)).rows[0].id as string;
  const gone = uniqueName('gone').replaceAll('_', '-');
  const dead = await insert(
    `insert into ${schema}.messages (topic, key, payload, state, attempts, last_error, created_at) values ($1, 'a', 'first of a', 'dead', 2, 'unknown topic', now() - interval '1 hour')`,
    [gone],
  );
  const behind = await insert(`insert into ${schema}.messages (topic, key, payload) values ($1, 'a', 'second of a')`, [topic]);
  const sent = await insert(`insert into ${schema}.messages (topic, key, payload, state, attempts, sent_at) values ($1, 's', 'sent', 'sent', 1, now())`, [topic]);
  await pool.query(`insert into ${schema}.consumer_offsets (group_id, topic, partition, next_offset) values ('ledger', $1, 0, 0)`, [topic]);
  const letter = await insert(`insert into ${schema}.dead_letters (group_id, topic, partition, "offset", error, attempts) values ('ledger', $1, 0, 0, 'boom', 3)`, [topic]);
  return { dead, behind, sent, letter, topic };
}
type Fixture = Awaited<ReturnType<typeof repairFixture>>;

/** Reads the topic back and checks the repaired dead row went first, then the row held behind it: exactly once each. */
async function expectRepairedInOrder(topic: string, f: Fixture): Promise<void> {
  const read = await readTopic(connection, topic, 1, { expected: 2 });
  expectExactlyOnce(read, [f.dead, f.behind]);
  expect(read.map((m) => headerValue(m, HEADER.outboxId))).toEqual([f.dead, f.behind]);
}

// ---------------------------------------------------------------------------------------
// enqueue
// ---------------------------------------------------------------------------------------

type Caller = 'client' | 'pool' | 'drizzle database' | 'plain object' | 'null' | 'query that is no function';

interface EnqueueCase {
  name: string;
  events: unknown;
  options?: (schema: string) => unknown;
  caller?: Caller;
  code: OutboxErrorCode;
  field?: string;
  index?: number;
  message?: RegExp;
}

const ok = { topic: 'orders', key: 'k', payload: 'x' };
const cyclic: Record<string, unknown> = { topic: 'orders', payload: {} };
(cyclic.payload as Record<string, unknown>).self = cyclic.payload;

const ENQUEUE_CASES: EnqueueCase[] = [
  { name: 'an empty topic', events: { ...ok, topic: '' }, code: 'INVALID_EVENT', field: 'topic' },
  { name: 'a topic of 250 characters', events: { ...ok, topic: 'a'.repeat(250) }, code: 'INVALID_EVENT', field: 'topic' },
  { name: 'a topic with characters Kafka refuses', events: { ...ok, topic: 'orders/paid' }, code: 'INVALID_EVENT', field: 'topic', message: /not a legal Kafka topic name/ },
  { name: 'the topic ".."', events: { ...ok, topic: '..' }, code: 'INVALID_EVENT', field: 'topic' },
  { name: 'a topic that is not a string', events: { ...ok, topic: 42 }, code: 'INVALID_EVENT', field: 'topic', message: /must be a string, got number/ },
  { name: 'a payload holding a BigInt', events: { ...ok, payload: { n: 1n } }, code: 'INVALID_EVENT', field: 'payload', message: /not JSON-serialisable/ },
  { name: 'a payload with a cycle', events: cyclic, code: 'INVALID_EVENT', field: 'payload', message: /not JSON-serialisable/ },
  { name: 'a payload that is a function', events: { ...ok, payload: () => 1 }, code: 'INVALID_EVENT', field: 'payload' },
  { name: 'a missing payload', events: { topic: 'orders', key: 'k' }, code: 'INVALID_EVENT', field: 'payload', message: /use null for a tombstone/ },
  { name: 'a payload over the default size limit', events: { ...ok, payload: Buffer.alloc(1_000_001) }, code: 'INVALID_EVENT', field: 'payload', message: /exceeds the limit of 1000000 bytes/ },
  { name: 'a payload over a configured maxMessageBytes', events: { ...ok, payload: 'x'.repeat(600) }, options: (schema) => ({ schema, maxMessageBytes: 500 }), code: 'INVALID_EVENT', field: 'payload', message: /exceeds the limit of 500 bytes/ },
  { name: 'a header value that is a number', events: { ...ok, headers: { tenant: 7 } }, code: 'INVALID_EVENT', field: 'headers.tenant' },
  { name: 'a header value that is an object', events: { ...ok, headers: { tenant: { id: 7 } } }, code: 'INVALID_EVENT', field: 'headers.tenant' },
  { name: 'headers given as an array', events: { ...ok, headers: [['tenant', 'a']] }, code: 'INVALID_EVENT', field: 'headers' },
  { name: 'an empty header name', events: { ...ok, headers: { '': 'v' } }, code: 'INVALID_EVENT', field: 'headers' },
  { name: 'the reserved header outbox-id', events: { ...ok, headers: { 'outbox-id': '1' } }, code: 'INVALID_EVENT', field: 'headers.outbox-id', message: /set by the relay/ },
  { name: 'the reserved header Outbox-Source in another letter case', events: { ...ok, headers: { 'Outbox-Source': 'forged' } }, code: 'INVALID_EVENT', field: 'headers.Outbox-Source' },
  { name: 'a traceparent header instead of the traceparent field', events: { ...ok, headers: { traceparent: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01' } }, code: 'INVALID_EVENT', field: 'headers.traceparent' },
  { name: 'the claim-check header enqueue sets itself', events: { ...ok, headers: { 'outbox-claim-check': 'postgres' } }, code: 'INVALID_EVENT', field: 'headers.outbox-claim-check' },
  { name: 'a numeric key', events: { ...ok, key: 42 }, code: 'INVALID_EVENT', field: 'key', message: /must be a string or null, got number/ },
  { name: 'a Buffer key', events: { ...ok, key: Buffer.from('k') }, code: 'INVALID_EVENT', field: 'key' },
  { name: 'an object key', events: { ...ok, key: { id: 1 } }, code: 'INVALID_EVENT', field: 'key' },
  { name: 'a key with a NUL character', events: { ...ok, key: 'a\u0000b' }, code: 'INVALID_EVENT', field: 'key', message: /NUL/ },
  { name: 'a key over 2,048 bytes of UTF-8 (1,025 characters of é)', events: { ...ok, key: 'é'.repeat(1_025) }, code: 'INVALID_EVENT', field: 'key', message: /at most 2048 bytes of UTF-8 \(MAX_KEY_BYTES\), got 2050/ },
  { name: 'a key of 1.1 MB', events: { ...ok, key: 'k'.repeat(1_100_000) }, code: 'INVALID_EVENT', field: 'key', message: /at most 2048 bytes/ },
  { name: 'an empty aggregateId', events: { ...ok, aggregateId: '' }, code: 'INVALID_EVENT', field: 'aggregateId' },
  { name: 'a numeric aggregateId', events: { ...ok, aggregateId: 17 }, code: 'INVALID_EVENT', field: 'aggregateId' },
  { name: 'an eventType that is not a string', events: { ...ok, eventType: ['OrderPlaced'] }, code: 'INVALID_EVENT', field: 'eventType' },
  { name: 'a schemaVersion of 0', events: { ...ok, schemaVersion: 0 }, code: 'INVALID_EVENT', field: 'schemaVersion' },
  { name: 'a malformed traceparent', events: { ...ok, traceparent: 'not-a-trace' }, code: 'INVALID_EVENT', field: 'traceparent' },
  { name: 'an event that is null', events: null, code: 'INVALID_EVENT', field: 'event' },
  { name: 'a batch whose third event is bad (none of the batch)', events: [ok, ok, { ...ok, topic: 'bad topic' }], code: 'INVALID_EVENT', field: 'topic', index: 2, message: /^events\[2\]\.topic: / },
  { name: 'a misspelt option (maxMesageBytes)', events: ok, options: (schema) => ({ schema, maxMesageBytes: 10 }), code: 'INVALID_OPTIONS', message: /maxMesageBytes is not an enqueue option/ },
  { name: 'options that are null', events: ok, options: () => null, code: 'INVALID_OPTIONS' },
  { name: 'a negative maxMessageBytes', events: ok, options: (schema) => ({ schema, maxMessageBytes: -1 }), code: 'INVALID_EVENT', field: 'maxMessageBytes' },
  { name: 'a schema name that needs quoting', events: ok, options: () => ({ schema: 'orders"; drop table x; --' }), code: 'INVALID_OPTIONS', message: /lower-case letters, digits and _/ },
  { name: 'a pg Pool as the caller', events: ok, caller: 'pool', code: 'NOT_IN_TRANSACTION' },
  { name: 'a drizzle database over a Pool as the caller', events: ok, caller: 'drizzle database', code: 'NOT_IN_TRANSACTION', message: /db\.transaction/ },
  { name: 'a plain object as the caller', events: ok, caller: 'plain object', code: 'INVALID_ARGUMENT' },
  { name: 'null as the caller', events: ok, caller: 'null', code: 'INVALID_ARGUMENT' },
  { name: 'a caller whose query is no function', events: ok, caller: 'query that is no function', code: 'INVALID_ARGUMENT' },
];

describe('enqueue: refused with a typed error, writing nothing; the caller transaction goes on', () => {
  let schema: string;
  let topic: string;
  const good: string[] = [];
  beforeAll(async () => {
    schema = await freshSchema(pool);
    topic = await freshTopic(admin, 2);
  });

  function callerFor(caller: Caller | undefined, client: pg.PoolClient): unknown {
    switch (caller) {
      case 'pool':
        return pool;
      case 'drizzle database':
        return drizzle(pool);
      case 'plain object':
        return {};
      case 'null':
        return null;
      case 'query that is no function':
        return { query: 'select 1' };
      default:
        return client;
    }
  }

  it.each(ENQUEUE_CASES)('an enqueue of $name is refused with $code and writes nothing', async (c) => {
    const before = await count(`${schema}.messages`);
    const outcome = await inTransaction(pool, async (client) => {
      const event = (tag: string) => ({ topic, key: `good-${good.length % 7}`, payload: { case: c.name, tag } });
      const [first] = await enqueue(client, event('before'), { schema });
      const options = (c.options ? c.options(schema) : { schema }) as EnqueueOptions;
      const error = await enqueue(callerFor(c.caller, client), c.events as OutboxEvent, options).then(() => undefined, (err: unknown) => err);
      // The refusal came before any statement: the caller's transaction is still usable.
      const [second] = await enqueue(client, event('after'), { schema });
      return { error, ids: [first!, second!] };
    });
    expect(outcome.error).toBeInstanceOf(OutboxError);
    expect(outcome.error).toMatchObject({ code: c.code, ...(c.field === undefined ? {} : { field: c.field }), ...(c.index === undefined ? {} : { index: c.index }) });
    if (c.field !== undefined) expect((outcome.error as Error).message).toContain(c.field);
    if (c.message) expect((outcome.error as Error).message).toMatch(c.message);
    expect(await count(`${schema}.messages`)).toBe(before + 2);
    good.push(...outcome.ids);
  });

  it('every good event enqueued around the refused ones is published exactly once', async () => {
    expect(good).toHaveLength(ENQUEUE_CASES.length * 2);
    await withRelay(startRelay(schema, { shards: 2 }), async () => {
      await waitAllSent(pool, schema, 30_000);
    });
    expectExactlyOnce(await readTopic(connection, topic, 2, { expected: good.length, settleMs: 500 }), good);
  });
});

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

// ---------------------------------------------------------------------------------------
// CLI
// ---------------------------------------------------------------------------------------

interface CliCase {
  name: string;
  args: (f: Fixture) => string[];
  /** 2 unless a harmless answer is the documented one (a filter that matches nothing). */
  code?: number;
  stderr?: RegExp;
  stdout?: RegExp;
  /** Append --schema <schema> (default true). */
  schema?: boolean;
}

const CLI_CASES: CliCase[] = [
  { name: 'retry of a non-numeric id', args: () => ['retry', 'abc', '--reason', 'r'], stderr: /row id "abc" is not a positive decimal id/ },
  { name: 'retry of a negative id', args: () => ['retry', '--reason', 'r', '--', '-5'], stderr: /row id "-5" is not a positive decimal id/ },
  { name: 'retry of an id beyond bigint', args: () => ['retry', '9223372036854775808', '--reason', 'r'], stderr: /not a positive decimal id/ },
  { name: 'retry of an id that does not exist', args: () => ['retry', '424242424', '--reason', 'r'], stderr: /no outbox row with id 424242424; nothing changed \[NOT_FOUND\]/ },
  { name: 'retry of a dead row together with a sent one', args: (f) => ['retry', f.dead, f.sent, '--reason', 'r'], stderr: /row \d+ is sent: retry applies to failed, dead rows; nothing changed/ },
  { name: 'retry without --reason', args: (f) => ['retry', f.dead], stderr: /--reason is required/ },
  { name: 'retry with an empty --reason', args: (f) => ['retry', f.dead, '--reason', ''], stderr: /--reason must be 1-2000 characters/ },
  { name: 'retry --dead --since a day that does not exist (30 February)', args: () => ['retry', '--dead', '--since', '2026-02-30T10:00:00Z', '--reason', 'r'], stderr: /--since must be an ISO time/ },
  { name: 'retry --dead --limit in exponent notation', args: () => ['retry', '--dead', '--limit', '1e3', '--reason', 'r'], stderr: /--limit must be an integer, got "1e3"/ },
  { name: 'retry --dead of a topic no row has', args: () => ['retry', '--dead', '--topic', 'no-such-topic', '--reason', 'r'], stderr: /no outbox row has topic "no-such-topic"/ },
  { name: 'an unknown flag', args: (f) => ['retry', f.dead, '--reason', 'r', '--force'], stderr: /Unknown option '--force'/ },
  { name: 'an unknown command', args: () => ['frobnicate'], stderr: /unknown command "frobnicate"/ },
  { name: 'a --schema with SQL in it', args: () => ['stuck', '--schema', 'outbox; drop table x'], schema: false, stderr: /use lower-case letters, digits and _ \[INVALID_OPTIONS\]/ },
  { name: 'stuck --older-than with an unknown unit', args: () => ['stuck', '--older-than', '5x'], stderr: /--older-than must be a duration such as 30s/ },
  { name: 'stuck --older-than beyond ten years', args: () => ['stuck', '--older-than', '99999d'], stderr: /--older-than must be at most 3650d/ },
  { name: 'show of an id that does not exist', args: () => ['show', '424242424'], stderr: /no outbox row with id 424242424 \[NOT_FOUND\]/ },
  { name: 'offsets set to a negative offset', args: (f) => ['offsets', 'set', '--group', 'ledger', '--topic', f.topic, '--partition', '0', '--offset=-1'], stderr: /--offset must be >= 0, got -1/ },
  { name: 'offsets set of an unknown group', args: (f) => ['offsets', 'set', '--group', 'no-such-group', '--topic', f.topic, '--partition', '0', '--offset', '0'], stderr: /consumer group "no-such-group" has no stored offsets/ },
  { name: 'offsets set on a topic that does not exist', args: () => ['offsets', 'set', '--group', 'ledger', '--topic', 'no-such-topic-bad-input', '--partition', '0', '--offset', '0'], stderr: /topic no-such-topic-bad-input does not exist/ },
  { name: 'offsets set beyond the end of the partition', args: (f) => ['offsets', 'set', '--group', 'ledger', '--topic', f.topic, '--partition', '0', '--offset', '99999999999'], stderr: /offset 99999999999 is beyond the end/ },
  { name: 'offsets rewind to a time in the future', args: (f) => ['offsets', 'rewind', '--group', 'ledger', '--topic', f.topic, '--to-time', '2999-01-01T00:00:00Z'], stderr: /is in the future/ },
  { name: 'dead-letters replay without --reason', args: (f) => ['dead-letters', 'replay', f.letter, '--group', 'ledger'], stderr: /--reason is required/ },
  { name: 'dead-letters discard for an unknown group', args: (f) => ['dead-letters', 'discard', f.letter, '--group', 'no-such-group', '--reason', 'r'], stderr: /no consumer group "no-such-group" here/ },
  { name: 'relay with a shard count above its bound', args: () => ['relay', '--shards', '5000'], stderr: /shards must be an integer in 1\.\.1024, got 5000 \[INVALID_OPTIONS\]/ },
  // Filters are bound parameters: SQL in them matches nothing, and nothing is changed or audited.
  { name: 'retry --dead --key with SQL in it', args: () => ['retry', '--dead', '--key', "x'; drop table messages; --", '--reason', 'r', '--json'], code: 0, stdout: /"changed":0/ },
  { name: 'stuck --key with SQL in it', args: () => ['stuck', '--older-than', '1s', '--key', "a' or '1'='1", '--json'], code: 0, stdout: /"rows":\[\]/ },
];

describe('the CLI: bad input exits 2 with a message and changes nothing', () => {
  let schema: string;
  let f: Fixture;
  let before: Awaited<ReturnType<typeof snapshot>>;
  beforeAll(async () => {
    schema = await freshSchema(pool);
    f = await repairFixture(schema, await freshTopic(admin, 1));
    before = await snapshot(schema);
  });

  it.concurrent.for(CLI_CASES)('outbox-relay refuses $name', async (c, { expect }) => {
    const args = [...c.args(f), ...(c.schema === false ? [] : ['--schema', schema])];
    const result = await cli(...args);
    expect({ args, code: result.code }).toEqual({ args, code: c.code ?? 2 });
    if (c.code === undefined) expect(result.stderr).toMatch(/^outbox-relay [a-z-]+: .+|^unknown command/);
    if (c.stderr) expect(result.stderr).toMatch(c.stderr);
    if (c.stdout) expect(result.stdout).toMatch(c.stdout);
    expect(await snapshot(schema)).toEqual(before);
  });

  it('after the refusals, a retry with a reason is audited and the relay publishes the row, then the row held behind it', async () => {
    expect(await snapshot(schema)).toEqual(before);
    // The operator creates the topic the row was for (here: points it at one that exists).
    await pool.query(`update ${schema}.messages set topic = $2 where id = $1`, [f.dead, f.topic]);
    const retried = await cli('retry', f.dead, '--reason', 'topic created', '--actor', 'oncall', '--schema', schema);
    expect(retried.code).toBe(0);
    const discarded = await cli('dead-letters', 'discard', f.letter, '--group', 'ledger', '--reason', 'duplicate', '--schema', schema);
    expect(discarded.code).toBe(0);
    await withRelay(startRelay(schema, { shards: 1 }), async () => {
      await waitAllSent(pool, schema, 30_000);
    });
    await expectRepairedInOrder(f.topic, f);
    const { rows } = await pool.query(`select actor, command, row_ids::text[] as ids from ${schema}.operator_actions order by id`);
    expect(rows).toMatchObject([{ actor: 'oncall', command: 'retry', ids: [f.dead] }, { command: 'dead-letters discard', ids: [f.letter] }]);
  });
});

// ---------------------------------------------------------------------------------------
// HTTP (the relay's --http server)
// ---------------------------------------------------------------------------------------

interface HttpCase {
  name: string;
  method: string;
  path: (f: Fixture) => string;
  body?: string;
  /** The bearer token sent; `authorization` overrides the header as a whole. */
  token?: string;
  authorization?: string;
  host?: string;
  server?: 'admin' | 'read-only';
  status: number;
  error: RegExp;
}

const TOKEN = 'bad-input-token';
const reason = JSON.stringify({ reason: 'r' });

const HTTP_CASES: HttpCase[] = [
  { name: 'GET of a non-numeric row id', method: 'GET', path: () => '/api/rows/abc', status: 400, error: /row id must be a positive decimal id/ },
  { name: 'GET of a row id beyond bigint', method: 'GET', path: () => '/api/rows/99999999999999999999', status: 400, error: /row id must be a positive decimal id/ },
  { name: 'GET of a row that does not exist', method: 'GET', path: () => '/api/rows/424242424', status: 404, error: /no outbox row 424242424/ },
  { name: 'GET /api/stuck with a bad duration', method: 'GET', path: () => '/api/stuck?olderThan=5x', status: 400, error: /olderThan must be a duration/ },
  { name: 'GET /api/stuck with limit 0', method: 'GET', path: () => '/api/stuck?limit=0', status: 400, error: /limit must be an integer in 1\.\.10000/ },
  { name: 'GET /api/stuck with state sent', method: 'GET', path: () => '/api/stuck?state=sent', status: 400, error: /state must be pending, failed or dead/ },
  { name: 'GET /api/stuck of a topic no row has', method: 'GET', path: () => '/api/stuck?topic=no-such-topic', status: 404, error: /no outbox row has topic "no-such-topic"/ },
  { name: 'GET /api/dead-letters without a group', method: 'GET', path: () => '/api/dead-letters', status: 400, error: /group is required/ },
  { name: 'GET /api/dead-letters of an unknown group', method: 'GET', path: () => '/api/dead-letters?group=no-such-group', status: 404, error: /no consumer group "no-such-group"/ },
  { name: 'GET of an unknown route', method: 'GET', path: () => '/api/nothing-here', status: 404, error: /no route \/api\/nothing-here/ },
  { name: 'DELETE of a row', method: 'DELETE', path: (f) => `/api/rows/${f.dead}`, status: 405, error: /GET, or POST/ },
  { name: 'a request naming a host that is not loopback (DNS rebinding)', method: 'GET', path: () => '/api/status', host: 'evil.example:9464', status: 421, error: /only requests for a loopback host name/ },
  { name: 'POST retry on a server without an admin token', method: 'POST', path: (f) => `/api/rows/${f.dead}/retry`, body: reason, token: TOKEN, server: 'read-only', status: 403, error: /no admin token is configured/ },
  { name: 'POST retry without a bearer token', method: 'POST', path: (f) => `/api/rows/${f.dead}/retry`, body: reason, status: 401, error: /wrong or missing bearer token/ },
  { name: 'POST retry with a wrong bearer token', method: 'POST', path: (f) => `/api/rows/${f.dead}/retry`, body: reason, token: 'guess', status: 401, error: /wrong or missing bearer token/ },
  { name: 'POST retry with Basic credentials', method: 'POST', path: (f) => `/api/rows/${f.dead}/retry`, body: reason, authorization: `Basic ${Buffer.from(`admin:${TOKEN}`).toString('base64')}`, status: 401, error: /wrong or missing bearer token/ },
  { name: 'POST retry with a body that is not JSON', method: 'POST', path: (f) => `/api/rows/${f.dead}/retry`, body: '{reason: r', token: TOKEN, status: 400, error: /request body is not JSON/ },
  { name: 'POST retry with a JSON array body', method: 'POST', path: (f) => `/api/rows/${f.dead}/retry`, body: '["r"]', token: TOKEN, status: 400, error: /request body must be a JSON object/ },
  { name: 'POST retry with an oversized body', method: 'POST', path: (f) => `/api/rows/${f.dead}/retry`, body: JSON.stringify({ reason: 'x'.repeat(20_000) }), token: TOKEN, status: 413, error: /request body over 16384 bytes/ },
  { name: 'POST retry without a reason', method: 'POST', path: (f) => `/api/rows/${f.dead}/retry`, body: '{}', token: TOKEN, status: 400, error: /reason must be a string of 1-2000 characters/ },
  { name: 'POST retry with a numeric reason', method: 'POST', path: (f) => `/api/rows/${f.dead}/retry`, body: '{"reason": 5}', token: TOKEN, status: 400, error: /reason must be a string/ },
  { name: 'POST retry of a non-numeric row id', method: 'POST', path: () => '/api/rows/1;drop/retry', body: reason, token: TOKEN, status: 400, error: /row id must be a positive decimal id/ },
  { name: 'POST retry of a sent row', method: 'POST', path: (f) => `/api/rows/${f.sent}/retry`, body: reason, token: TOKEN, status: 400, error: /is sent: retry applies to failed, dead rows; nothing changed/ },
  { name: 'POST retry of a row that does not exist', method: 'POST', path: () => '/api/rows/424242424/retry', body: reason, token: TOKEN, status: 404, error: /no outbox row with id 424242424/ },
  { name: 'POST of an unknown action', method: 'POST', path: (f) => `/api/rows/${f.dead}/publish-now`, body: reason, token: TOKEN, status: 404, error: /no route POST/ },
  { name: 'POST replay of a dead letter without a group', method: 'POST', path: (f) => `/api/dead-letters/${f.letter}/replay`, body: reason, token: TOKEN, status: 400, error: /group must be a string/ },
  { name: 'POST replay of a dead letter of an unknown group', method: 'POST', path: (f) => `/api/dead-letters/${f.letter}/replay`, body: JSON.stringify({ reason: 'r', group: 'no-such-group' }), token: TOKEN, status: 404, error: /group no-such-group has no dead letter/ },
];

function call(port: number, c: { method: string; path: string; body?: string | undefined; headers?: Record<string, string> }): Promise<{ status: number; type: string; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method: c.method, path: c.path, headers: { 'content-type': 'application/json', ...c.headers } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => resolve({ status: res.statusCode!, type: String(res.headers['content-type']), body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(c.body);
  });
}

describe('the relay over HTTP: bad requests get their status and a JSON error, and change nothing', () => {
  let schema: string;
  let f: Fixture;
  let relay: Relay;
  let ports: Record<'admin' | 'read-only', number>;
  let before: Awaited<ReturnType<typeof snapshot>>;
  const servers: Array<Awaited<ReturnType<typeof serveRelayHttp>>> = [];
  beforeAll(async () => {
    schema = await freshSchema(pool);
    f = await repairFixture(schema, await freshTopic(admin, 1));
    relay = await startRelay(schema, { shards: 1 });
    const logger = createLogger({ level: 'silent' });
    servers.push(await serveRelayHttp(relay, { host: '127.0.0.1', port: 0 }, logger, { adminToken: TOKEN }));
    servers.push(await serveRelayHttp(relay, { host: '127.0.0.1', port: 0 }, logger));
    ports = { admin: (servers[0]!.address() as AddressInfo).port, 'read-only': (servers[1]!.address() as AddressInfo).port };
    // The relay has met the row held behind the dead one: its state no longer moves.
    await waitFor(async () => (await count(`${schema}.messages where held`)) === 1, { message: 'row held behind the dead one' });
    before = await snapshot(schema);
  });
  afterAll(async () => {
    await relay?.stop();
    for (const s of servers) {
      s.closeAllConnections();
      await new Promise((resolve) => s.close(resolve));
    }
  });

  it.each(HTTP_CASES)('$name answers $status with a JSON error', async (c) => {
    const headers: Record<string, string> = {};
    if (c.token) headers.authorization = `Bearer ${c.token}`;
    if (c.authorization) headers.authorization = c.authorization;
    if (c.host) headers.host = c.host;
    const response = await call(ports[c.server ?? 'admin'], { method: c.method, path: c.path(f), body: c.body, headers });
    expect({ status: response.status, type: response.type }).toEqual({ status: c.status, type: 'application/json' });
    expect((JSON.parse(response.body) as { error: string }).error).toMatch(c.error);
    expect(await snapshot(schema)).toEqual(before);
  });

  it('after the refusals, an authorised retry is audited and the relay publishes the row, then the row held behind it', async () => {
    await pool.query(`update ${schema}.messages set topic = $2 where id = $1`, [f.dead, f.topic]);
    const response = await call(ports.admin, { method: 'POST', path: `/api/rows/${f.dead}/retry`, body: JSON.stringify({ reason: 'topic created', actor: 'dashboard-user' }), headers: { authorization: `Bearer ${TOKEN}` } });
    expect(response.status).toBe(200);
    expect(JSON.parse(response.body)).toMatchObject({ command: 'retry', changed: 1, rows: [{ id: f.dead, state: 'dead', to: 'pending' }] });
    await waitAllSent(pool, schema, 30_000);
    await expectRepairedInOrder(f.topic, f);
    const { rows } = await pool.query(`select actor, command, row_ids::text[] as ids from ${schema}.operator_actions`);
    expect(rows).toEqual([{ actor: 'dashboard-user', command: 'retry', ids: [f.dead] }]);
  });
});

// ---------------------------------------------------------------------------------------
// consumer records
// ---------------------------------------------------------------------------------------

interface RawRecord {
  value: Buffer | null;
  headers: MessageHeader[];
}

interface RecordCase {
  name: string;
  record: (orderId: string) => RawRecord;
  outcome: 'dead-lettered' | 'applied' | 'skipped';
  error?: RegExp;
}

const SOURCE = 'orders-db';
/** Headers as the relay writes them, with `extra` appended (a copy of a reserved name comes after the relay's, as older relays wrote them). */
const relayHeaders = (id: string, over: Record<string, string> = {}, extra: MessageHeader[] = []): MessageHeader[] => [
  ...Object.entries({ [HEADER.outboxId]: id, [HEADER.source]: SOURCE, [HEADER.eventType]: 'order.paid', [HEADER.schemaVersion]: '1', ...over }).map(([k, v]) => ({ [k]: Buffer.from(v) })),
  ...extra,
];
const order = (orderId: string, amount = '10.00') => Buffer.from(JSON.stringify({ orderId, amount }));
/** The outbox id of the first good record: forged cases reuse it. */
const FIRST_ID = '1';

const RECORD_CASES: RecordCase[] = [
  { name: 'a value that is not JSON', record: () => ({ value: Buffer.from('{"orderId": '), headers: relayHeaders('9001') }), outcome: 'dead-lettered', error: /value is not JSON/ },
  { name: 'a JSON value of the wrong shape', record: (id) => ({ value: Buffer.from(JSON.stringify({ orderId: id, amount: 10 })), headers: relayHeaders('9002') }), outcome: 'dead-lettered', error: /orderId and amount \(a decimal string\) are required/ },
  { name: 'an unsupported schema-version header', record: (id) => ({ value: order(id), headers: relayHeaders('9003', { [HEADER.schemaVersion]: '2' }) }), outcome: 'dead-lettered', error: /schema-version "2" is not supported/ },
  { name: 'a schema-version header that is not a number', record: (id) => ({ value: order(id), headers: relayHeaders('9004', { [HEADER.schemaVersion]: 'v1' }) }), outcome: 'dead-lettered', error: /schema-version "v1" is not supported/ },
  { name: 'a huge record (900 KB) the handler cannot parse', record: () => ({ value: Buffer.alloc(900_000, 'x'), headers: relayHeaders('9005') }), outcome: 'dead-lettered', error: /value is not JSON/ },
  { name: 'no outbox-id or outbox-source header (another producer)', record: (id) => ({ value: order(id), headers: relayHeaders('unused').filter((h) => !(HEADER.outboxId in h) && !(HEADER.source in h)) }), outcome: 'applied' },
  { name: 'an outbox-id of an applied record without outbox-source', record: (id) => ({ value: order(id), headers: relayHeaders(FIRST_ID).filter((h) => !(HEADER.source in h)) }), outcome: 'applied' },
  { name: 'the outbox-id of an applied record from another source', record: (id) => ({ value: order(id), headers: relayHeaders(FIRST_ID, { [HEADER.source]: 'billing-db' }) }), outcome: 'applied' },
  { name: 'a forged copy of an applied record identity appended after the relay headers', record: (id) => ({ value: order(id), headers: relayHeaders('9009', {}, [{ [HEADER.outboxId]: Buffer.from(FIRST_ID) }]) }), outcome: 'applied' },
  { name: 'the same (source, outbox-id) as an applied record (a re-publish)', record: (id) => ({ value: order(id), headers: relayHeaders(FIRST_ID) }), outcome: 'skipped' },
  { name: 'a tombstone (null value)', record: () => ({ value: null, headers: relayHeaders('9011') }), outcome: 'skipped' },
  { name: 'no headers at all', record: (id) => ({ value: order(id), headers: [] }), outcome: 'skipped' },
];

describe('consumer records: bad ones are dead-lettered with their reason or passed over as documented, and the records around them are applied', () => {
  let schema: string;
  let topic: string;
  let consumer: Consumer;
  const groupId = uniqueName('g');
  /** Offset of each case's record and of the good record right after it. */
  const offsets = new Map<string, { bad: number; next: number }>();
  const goods: string[] = [];

  /**
   * The application's handler, as the README writes one: a tombstone or another event type
   * is not ours (the offset moves on); anything it cannot book throws, and is retried, then
   * dead-lettered with the error.
   */
  const handler: RecordHandler = async (record, tx) => {
    if (record.value === null || record.headers.eventType !== 'order.paid') return;
    if (record.headers.schemaVersion !== 1) throw new Error(`schema-version ${JSON.stringify(record.headers.raw[HEADER.schemaVersion])} is not supported`);
    let event: { orderId?: unknown; amount?: unknown };
    try {
      event = JSON.parse(record.value.toString('utf8')) as typeof event;
    } catch (err) {
      throw new Error(`value is not JSON: ${(err as Error).message.slice(0, 100)}`);
    }
    if (typeof event.orderId !== 'string' || typeof event.amount !== 'string' || !/^\d+\.\d{2}$/.test(event.amount)) {
      throw new Error('value is not an order.paid event: orderId and amount (a decimal string) are required');
    }
    await tx.query(`insert into "${schema}".ledger (order_id, amount, outbox_id, source, "offset") values ($1::text, $2::numeric, $3::text, $4::text, $5::bigint)`, [
      event.orderId,
      event.amount,
      record.headers.outboxId ?? null,
      record.headers.source ?? null,
      record.offset,
    ]);
  };

  beforeAll(async () => {
    schema = await freshSchema(pool);
    topic = await freshTopic(admin, 1);
    await pool.query(`create table "${schema}".ledger (id bigserial primary key, order_id text not null, amount numeric(12,2) not null, outbox_id text, source text, "offset" bigint not null)`);
    // Good records (relay-like, ids from 1) around every bad one, in one Kafka transaction.
    const records: RawRecord[] = [];
    const good = () => {
      const id = String(goods.length + 1);
      goods.push(`good-${id}`);
      records.push({ value: order(`good-${id}`), headers: relayHeaders(id) });
    };
    good();
    for (const c of RECORD_CASES) {
      records.push(c.record(`case-${RECORD_CASES.indexOf(c)}`));
      good();
    }
    const producer = new TransactionalProducer({ connection, transactionalId: uniqueName('bad-input-producer'), preset: 'low-latency' });
    try {
      await producer.connect();
      await producer.init(30_000);
      await producer.begin();
      const delivered = await Promise.all(records.map((r, i) => producer.produce({ topic, partition: 0, key: `r${i}`, value: r.value, headers: r.headers })));
      await producer.commit(30_000);
      for (const [i, c] of RECORD_CASES.entries()) offsets.set(c.name, { bad: delivered[1 + 2 * i]!.offset, next: delivered[2 + 2 * i]!.offset });
    } finally {
      await producer.disconnect();
    }
    const last = Math.max(...[...offsets.values()].map((o) => o.next));
    consumer = testConsumer({ schema, groupId, topics: [topic], maxAttempts: 2, handler });
    consumers.push(consumer);
    await consumer.start();
    await waitFor(async () => Number((await pool.query(`select next_offset from "${schema}".consumer_offsets where group_id = $1`, [groupId])).rows[0]?.next_offset ?? -1) > last, {
      timeoutMs: 45_000,
      message: 'the consumer past the last record',
    });
  });
  afterAll(async () => {
    await consumer?.stop();
  });

  it.each(RECORD_CASES)('a record with $name is $outcome, and the record after it is applied', async (c) => {
    const { bad, next } = offsets.get(c.name)!;
    const orderId = `case-${RECORD_CASES.indexOf(c)}`;
    const applied = await pool.query(`select order_id, outbox_id, source from "${schema}".ledger where "offset" = any($1::bigint[]) order by "offset"`, [[bad, next]]);
    const letters = await pool.query<{ error: string; attempts: number; bytes: number | null }>(
      `select error, attempts, octet_length(value) as bytes from "${schema}".dead_letters where group_id = $1 and "offset" = $2`,
      [groupId, bad],
    );
    const after = applied.rows.filter((r) => r.order_id.startsWith('good-'));
    expect(after).toHaveLength(1);
    if (c.outcome === 'dead-lettered') {
      expect(letters.rows).toHaveLength(1);
      expect(letters.rows[0]!.error).toMatch(c.error!);
      expect(letters.rows[0]!.attempts).toBe(2);
      expect(letters.rows[0]!.bytes).toBe(c.record(orderId).value?.length ?? null);
    } else {
      expect(letters.rows).toEqual([]);
    }
    expect(applied.rows.filter((r) => r.order_id === orderId)).toHaveLength(c.outcome === 'applied' ? 1 : 0);
  });

  it('every good record is applied exactly once, in offset order; only the dead-lettered cases have dead letters; identities stay per source', async () => {
    const { rows } = await pool.query<{ order_id: string }>(`select order_id from "${schema}".ledger where order_id like 'good-%' order by "offset"`);
    expect(rows.map((r) => r.order_id)).toEqual(goods);
    expect(await count(`"${schema}".dead_letters where group_id = $1`, [groupId])).toBe(RECORD_CASES.filter((c) => c.outcome === 'dead-lettered').length);
    // The forged copy counted as outbox id 9009 (the relay's own header, first), not as the applied id 1.
    const forged = await pool.query(`select outbox_id, source from "${schema}".ledger where order_id = $1`, [`case-${RECORD_CASES.findIndex((c) => c.name.startsWith('a forged copy'))}`]);
    expect(forged.rows).toEqual([{ outbox_id: '9009', source: SOURCE }]);
    const inbox = await pool.query(`select source, outbox_id from "${schema}".consumer_inbox where group_id = $1 and outbox_id = $2 order by source`, [groupId, FIRST_ID]);
    expect(inbox.rows).toEqual([{ source: 'billing-db', outbox_id: FIRST_ID }, { source: SOURCE, outbox_id: FIRST_ID }]);
  });
});
