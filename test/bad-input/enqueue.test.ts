/**
 * The bad-input corpus (test/bad-input/), enqueue: what this entry point must refuse, each
 * case checking (a) the refusal is typed (an OutboxError code, a SQLSTATE and constraint, a
 * CLI exit code 2 with its message, an HTTP status with a JSON error) or the row/record is
 * parked with its reason, and (b) nothing is lost: the refused write changed nothing, and
 * good input through the same entry point still flows, end to end.
 */
import { drizzle } from 'drizzle-orm/node-postgres';
import type pg from 'pg';
import { beforeAll, describe, expect, it } from 'vitest';
import { OutboxError, type OutboxErrorCode } from '../../src/errors.js';
import { enqueue, type EnqueueOptions } from '../../src/outbox/enqueue.js';
import { type OutboxEvent } from '../../src/outbox/event.js';
import { freshSchema, inTransaction } from '../support/db.js';
import { freshTopic, readTopic } from '../support/kafka.js';
import { expectExactlyOnce, startRelay, waitAllSent, withRelay } from '../support/relay.js';
import { useTestServices } from '../support/services.js';
import { badInputChecks } from '../support/bad-input.js';

const services = useTestServices({ poolSize: 8 });
const { connection, pool, admin } = services;
const { count } = badInputChecks(services);

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
  { name: 'a field no event has, spelt like one (aggregateID)', events: { ...ok, aggregateID: 'order-7' }, code: 'INVALID_EVENT', field: 'aggregateID', message: /is not a field of an outbox event \(did you mean aggregateId\?\)/ },
  { name: 'a field no event has (partition)', events: [ok, { ...ok, partition: 3 }], code: 'INVALID_EVENT', field: 'partition', index: 1, message: /events\[1\]\.partition: is not a field of an outbox event; the fields are topic, key, payload/ },
  { name: 'a field in snake case (event_type)', events: { ...ok, event_type: 'OrderPlaced' }, code: 'INVALID_EVENT', field: 'event_type', message: /did you mean eventType\?/ },
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
