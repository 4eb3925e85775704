import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { enqueue } from '../../src/outbox/enqueue.js';
import { freshSchema, inTransaction } from '../helpers/db.js';
import { freshTopic, headerValue, readTopic } from '../helpers/kafka.js';
import { expectExactlyOnce, startRelay, waitAllSent } from '../helpers/relay.js';
import { waitFor } from '../helpers/wait.js';
import { useTestServices } from '../helpers/services.js';

describe('relay and the rows it is given', () => {
  const { connection, pool, admin } = useTestServices({ poolSize: 8 });

  it('transactions that commit out of id order all arrive; a rolled-back one never does', async () => {
    const schema = await freshSchema(pool);
    const topic = await freshTopic(admin, 1);
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
    const schema = await freshSchema(pool);
    const topic = await freshTopic(admin, 2);
    const relay = await startRelay(schema);
    try {
      const { rows } = await pool.query(
        `insert into ${schema}.messages (topic, key, payload) values ($1, 'sql-1', '{"by":"sql"}'), ($1, null, 'no key') returning id::text`,
        [topic],
      );
      await waitAllSent(pool, schema);
      const read = await readTopic(connection, topic, 2, { expected: 2 });
      expectExactlyOnce(read, rows.map((r) => r.id));
      expect(read.map((m) => m.value?.toString()).sort()).toEqual(['no key', '{"by":"sql"}']);
    } finally {
      await relay.stop();
    }
  });

  it('an oversized payload and an unknown topic end dead with a readable error; other keys flow; later rows of those keys wait', async () => {
    const schema = await freshSchema(pool);
    const topic = await freshTopic(admin, 3);
    const relay = await startRelay(schema, { maxAttempts: 3, rowBackoff: { minMs: 100, maxMs: 200 } });
    try {
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
      expect(byId.get(big)).toMatchObject({ state: 'dead', attempts: 3 });
      expect(byId.get(big).last_error).toMatch(/exceeds the producer limit/);
      expect(byId.get(lost)).toMatchObject({ state: 'dead', attempts: 3 });
      expect(byId.get(lost).last_error).toMatch(/unknown topic no-such-topic-anywhere/);
      // Later rows of the same keys are held back behind the dead rows.
      expect(byId.get(bigLater)).toMatchObject({ state: 'pending', attempts: 0 });
      expect(byId.get(lostLater)).toMatchObject({ state: 'pending', attempts: 0 });

      const read = await readTopic(connection, topic, 3, { expected: 50 });
      expectExactlyOnce(read, good);
    } finally {
      await relay.stop();
    }
  });

  it('a record the broker refuses (topic max.message.bytes) is isolated; the rest of its batch is published', async () => {
    const schema = await freshSchema(pool);
    const topic = await freshTopic(admin, 1, { 'max.message.bytes': '2000' });
    const good = await inTransaction(pool, (client) =>
      enqueue(
        client,
        [
          { topic, key: 'x', payload: 'small 1' },
          // Random bytes: compression cannot bring them under the topic's limit.
          { topic, key: 'y', payload: randomBytes(10_000) },
          { topic, key: 'z', payload: 'small 2' },
          { topic, key: 'y', payload: 'waits behind the refused one' },
        ],
        { schema },
      ),
    );
    const relay = await startRelay(schema, { maxAttempts: 2, rowBackoff: { minMs: 100, maxMs: 200 } });
    try {
      await waitFor(async () => (await pool.query(`select count(*)::int as n from ${schema}.messages where state = 'dead'`)).rows[0].n === 1, {
        timeoutMs: 30_000,
      });
      const { rows } = await pool.query(`select id::text, state, last_error from ${schema}.messages order by id`);
      expect(rows.map((r) => r.state)).toEqual(['sent', 'dead', 'sent', 'pending']);
      expect(rows[1].last_error).toMatch(/too large|MSG_SIZE|size/i);
      const read = await readTopic(connection, topic, 1, { expected: 2 });
      expectExactlyOnce(read, [good[0]!, good[2]!]);
    } finally {
      await relay.stop();
    }
  });
});
