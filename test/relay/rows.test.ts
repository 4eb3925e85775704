import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { enqueue } from '../../src/outbox/enqueue.js';
import { createLogger } from '../../src/log.js';
import { encodedSize, validateEvent } from '../../src/outbox/validate.js';
import { recordSize, toRecord } from '../../src/relay/records.js';
import { freshSchema, inTransaction } from '../support/db.js';
import { freshTopic, headerValue, readTopic } from '../support/kafka.js';
import { expectExactlyOnce, startRelay, testRelayOptions, waitAllSent, withRelay } from '../support/relay.js';
import { createRelay } from '../../src/relay/relay.js';
import { waitFor } from '../support/wait.js';
import { useTestServices } from '../support/services.js';
import { scrapeRegistry, sumOf } from '../support/metrics.js';

describe('relay and the rows it is given', () => {
  const { connection, pool, admin, freshOutbox } = useTestServices({ poolSize: 8 });

  it('transactions that commit out of id order all arrive; a rolled-back one never does', async () => {
    const { schema, topic } = await freshOutbox(1);
    const relay = await startRelay(schema);
    const first = await pool.connect();
    const second = await pool.connect();
    const third = await pool.connect();
    try {
      await first.query('begin');
      await second.query('begin');
      await third.query('begin');
      const [early] = await enqueue(first, { topic, key: 'a', payload: 'committed last' }, { schema });
      const [rolledBack] = await enqueue(second, { topic, key: 'b', payload: 'rolled back' }, { schema });
      const [late] = await enqueue(third, { topic, key: 'c', payload: 'committed first' }, { schema });
      expect(Number(early)).toBeLessThan(Number(late));
      await third.query('commit');
      // The later id is published while an earlier id is still uncommitted.
      await waitFor(async () => (await pool.query(`select state from ${schema}.messages where id = $1`, [late])).rows[0]?.state === 'sent');
      await second.query('rollback');
      await first.query('commit');
      await waitAllSent(pool, schema);
      const read = await readTopic(connection, topic, 1, { expected: 2 });
      expectExactlyOnce(read, [early!, late!]);
      expect(read.map((m) => m.value?.toString())).toEqual(['committed first', 'committed last']);
      expect(read.some((m) => headerValue(m, 'outbox-id') === rolledBack)).toBe(false);
    } finally {
      first.release();
      second.release();
      third.release();
      await relay.stop();
    }
  });

  it('rows inserted by plain SQL, with no library, are relayed', async () => {
    const { schema, topic } = await freshOutbox(2);
    await withRelay(startRelay(schema), async () => {
      const { rows } = await pool.query(
        `insert into ${schema}.messages (topic, key, payload) values ($1, 'sql-1', '{"by":"sql"}'), ($1, null, 'no key') returning id::text`,
        [topic],
      );
      await waitAllSent(pool, schema);
      const read = await readTopic(connection, topic, 2, { expected: 2 });
      expectExactlyOnce(read, rows.map((r) => r.id));
      expect(read.map((m) => m.value?.toString()).sort()).toEqual(['no key', '{"by":"sql"}']);
    });
  });

  it('a payload larger than any record ends dead at once and an unknown topic dead after its retries with a readable error; other keys flow; later rows of those keys wait', async () => {
    const { schema, topic } = await freshOutbox(3);
    await withRelay(startRelay(schema, { maxAttempts: 3, rowBackoff: { minMs: 100, maxMs: 200 } }), async () => {
      // Written by plain SQL: enqueue would refuse these up front.
      const insert = async (t: string, key: string, payload: Buffer | string) =>
        (await pool.query(`insert into ${schema}.messages (topic, key, payload) values ($1, $2, $3) returning id::text`, [t, key, payload])).rows[0].id as string;
      const big = await insert(topic, 'big', Buffer.alloc(1_500_000, 1));
      const bigLater = await insert(topic, 'big', 'after the big one');
      const lost = await insert('no-such-topic-anywhere', 'lost', 'x');
      const lostLater = await insert(topic, 'lost', 'after the lost one');
      const good = await inTransaction(pool, (client) =>
        enqueue(client, Array.from({ length: 50 }, (_, i) => ({ topic, key: `good-${i % 5}`, payload: { i } })), { schema }),
      );

      await waitFor(
        async () => {
          const { rows } = await pool.query(`select count(*)::int as n from ${schema}.messages where state = 'dead'`);
          return rows[0].n === 2;
        },
        { timeoutMs: 30_000, message: 'two dead rows' },
      );
      await waitFor(async () => (await pool.query(`select count(*)::int as n from ${schema}.messages where state = 'sent'`)).rows[0].n === 50);
      const { rows } = await pool.query(`select id::text, state, attempts, last_error from ${schema}.messages order by id`);
      const byId = new Map(rows.map((r) => [r.id, r]));
      // Too large for any record: dead at once, no retries.
      expect(byId.get(big)).toMatchObject({ state: 'dead', attempts: 1 });
      expect(byId.get(big).last_error).toMatch(/exceeds the limit of 1000000 bytes \(producer message.max.bytes\)/);
      expect(byId.get(lost)).toMatchObject({ state: 'dead', attempts: 3 });
      expect(byId.get(lost).last_error).toMatch(/unknown topic no-such-topic-anywhere/);
      // Later rows of the same keys are held back behind the dead rows.
      expect(byId.get(bigLater)).toMatchObject({ state: 'pending', attempts: 0 });
      expect(byId.get(lostLater)).toMatchObject({ state: 'pending', attempts: 0 });

      const read = await readTopic(connection, topic, 3, { expected: 50 });
      expectExactlyOnce(read, good);
    });
  });

  it('a record the broker refuses (topic max.message.bytes) is tried alone and ends dead; the rest of its shard flows in full batches', async () => {
    const schema = await freshSchema(pool);
    // Larger than the producer's batches, smaller than the record below.
    const topic = await freshTopic(admin, 1, { 'max.message.bytes': '200000' });
    const small = (n: number, from: number) => Array.from({ length: n }, (_, i) => ({ topic, key: `k${(from + i) % 10}`, payload: `small ${from + i}` }));
    const ids = await inTransaction(pool, (client) =>
      enqueue(
        client,
        [
          ...small(150, 0),
          // Random bytes: compression cannot bring them under the topic's limit.
          { topic, key: 'y', payload: randomBytes(300_000) },
          ...small(150, 150),
          { topic, key: 'y', payload: 'waits behind the refused one' },
        ],
        { schema },
      ),
    );
    const bad = ids[150]!;
    const after = ids[301]!;
    const good = ids.filter((id) => id !== bad && id !== after);
    const relay = createRelay(testRelayOptions(schema, { shards: 1, maxAttempts: 5, rowBackoff: { minMs: 100, maxMs: 200 } }));
    const batches: number[] = [];
    relay.events.on('batch', ({ rows }) => batches.push(rows));
    await relay.start();
    try {
      await waitFor(async () => (await pool.query(`select count(*)::int as n from ${schema}.messages where state = 'sent'`)).rows[0].n === 300, {
        timeoutMs: 30_000,
      });
      const { rows } = await pool.query(`select id::text, state, attempts, last_error from ${schema}.messages order by id`);
      const byId = new Map(rows.map((r) => [r.id as string, r]));
      // Refused alone as too large: no topic setting lets it through, so no retries.
      expect(byId.get(bad)).toMatchObject({ state: 'dead', attempts: 1 });
      expect(byId.get(bad).last_error).toMatch(/too large|MSG_SIZE|size/i);
      expect(byId.get(after)).toMatchObject({ state: 'pending', attempts: 0, last_error: null });
      // Only the refused row was ever marked: the others went once, in full batches.
      expect(good.every((id) => byId.get(id).state === 'sent' && byId.get(id).attempts === 1 && byId.get(id).last_error === null)).toBe(true);
      expect(batches.reduce((a, b) => a + b, 0)).toBe(300);
      expect(batches.length).toBeLessThanOrEqual(4);
      const read = await readTopic(connection, topic, 1, { expected: 300 });
      expectExactlyOnce(read, good);
      // The refused record's transaction was abandoned, counted under reason row; the others committed.
      const samples = await scrapeRegistry(relay.metrics);
      expect(sumOf(samples, 'relay_transaction_aborts_total', { reason: 'row' })).toBeGreaterThanOrEqual(1);
      expect(sumOf(samples, 'relay_published_records_total', { topic })).toBe(300);
    } finally {
      await relay.stop();
    }
  });

  it('the largest record enqueue accepts is published, and one byte more is refused by enqueue and dead at once in the relay, under one configured limit', async () => {
    const { schema, topic } = await freshOutbox(1);
    const limit = 200_000;
    await withRelay(startRelay(schema, { kafka: { properties: { 'message.max.bytes': limit } } }), async () => {
      const event = (bytes: number) => ({ topic, key: 'sized', payload: randomBytes(bytes), eventType: 'Sized', headers: { tenant: 'acme' } });
      // The largest payload enqueue accepts under the limit, found by bisection.
      let lo = 0;
      let hi = limit;
      while (lo < hi) {
        const mid = Math.ceil((lo + hi) / 2);
        if (encodedSize(validateEvent(event(mid), { maxMessageBytes: 10 * limit })) <= limit) lo = mid;
        else hi = mid - 1;
      }
      const [fits] = await inTransaction(pool, (client) => enqueue(client, event(lo), { schema, maxMessageBytes: limit }));
      const refused = await inTransaction(pool, (client) => enqueue(client, event(lo + 1), { schema, maxMessageBytes: limit }).catch((e: unknown) => e));
      expect(refused).toMatchObject({ code: 'INVALID_EVENT', field: 'payload' });
      // Written past enqueue, the same record is counted by the relay by the same rule, with
      // the real source id and row id in place of the longest ones enqueue must assume.
      const { rows: src } = await pool.query(`select source_id from ${schema}.outbox_source`);
      const relayCount = (id: number, bytes: number) =>
        recordSize(
          toRecord(
            { id: String(id), topic, key: 'sized', key_bytes: 5, payload: Buffer.alloc(bytes), headers: { tenant: 'acme' }, event_type: 'Sized', aggregate_type: null,
              aggregate_id: null, schema_version: null, traceparent: null, created_at: new Date(), attempts: 0, state: 'pending' },
            src[0].source_id as string,
            createLogger({ level: 'silent' }),
          ),
        );
      const largestFor = (id: number) => {
        let bytes = lo;
        while (relayCount(id, bytes + 1) <= limit) bytes += 1;
        return bytes;
      };
      const insert = async (bytes: number) =>
        (
          await pool.query(
            `insert into ${schema}.messages (topic, key, payload, event_type, headers) values ($1, 'sized', $2, 'Sized', '{"tenant":"acme"}') returning id::text`,
            [topic, randomBytes(bytes)],
          )
        ).rows[0].id as string;
      expect(largestFor(Number(fits))).toBeGreaterThanOrEqual(lo);
      const atLimit = await insert(largestFor(Number(fits) + 1));
      const over = await insert(largestFor(Number(fits) + 2) + 1);
      expect(Number(over)).toBe(Number(fits) + 2);
      await waitFor(async () => (await pool.query(`select state from ${schema}.messages where id = $1`, [over])).rows[0].state === 'dead');
      await waitFor(async () => (await pool.query(`select state from ${schema}.messages where id = $1`, [atLimit])).rows[0].state === 'sent');
      const { rows: states } = await pool.query(`select id::text, state, attempts, last_error from ${schema}.messages order by id`);
      expect(states.map((r) => r.state)).toEqual(['sent', 'sent', 'dead']);
      expect(states[0].id).toBe(fits);
      expect(states[2]).toMatchObject({ id: over, attempts: 1 });
      expect(states[2].last_error).toMatch(`record of ${limit + 1} bytes`);
      expect(states[2].last_error).toMatch(`exceeds the limit of ${limit} bytes`);
      const read = await readTopic(connection, topic, 1, { expected: 2 });
      expectExactlyOnce(read, [fits!, atLimit]);
    });
  });
});
