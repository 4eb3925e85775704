import { createHash, randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { CLAIM_CHECK_HEADER, postgresClaimCheckStore } from '../../src/claim-check/store.js';
import type { ConsumedRecord } from '../../src/consumer/record.js';
import { enqueue } from '../../src/outbox/enqueue.js';
import { testConsumer } from '../support/consumer.js';
import { freshSchema, inTransaction } from '../support/db.js';
import { headerValue, readTopic } from '../support/kafka.js';
import { expectExactlyOnce, startRelay, waitAllSent, withRelay } from '../support/relay.js';
import { useTestServices } from '../support/services.js';
import { waitFor } from '../support/wait.js';

const sha256 = (body: Buffer) => createHash('sha256').update(body).digest('hex');

describe('claim-check: bodies too large for a record travel out of band', () => {
  const { connection, pool, freshOutbox } = useTestServices({ poolSize: 8 });

  it('a 3 MB body is stored in the outbox database, sent as a small reference, and handed to the consumer whole and verified; a tampered body is dead-lettered', { timeout: 90_000 }, async () => {
    const { schema, topic } = await freshOutbox(1);
    const store = postgresClaimCheckStore({ schema });
    const big = randomBytes(3_000_000); // over the 1,000,000-byte record limit
    const medium = randomBytes(300_000);
    const tampered = randomBytes(400_000);
    const ids = await inTransaction(pool, (client) =>
      enqueue(
        client,
        [
          { topic, key: 'a', payload: big },
          { topic, key: 'a', payload: 'small, inline' },
          { topic, key: 'b', payload: medium },
          { topic, key: 'c', payload: tampered },
        ],
        { schema, claimCheck: { store } },
      ),
    );
    // A rolled-back writer leaves no body behind.
    const rolledBack = await pool.connect();
    try {
      await rolledBack.query('begin');
      await enqueue(rolledBack, { topic, key: 'z', payload: randomBytes(500_000) }, { schema, claimCheck: { store } });
      await rolledBack.query('rollback');
    } finally {
      rolledBack.release();
    }
    const { rows: bodies } = await pool.query(`select size from ${schema}.claim_checks order by size`);
    expect(bodies.map((r) => Number(r.size))).toEqual([300_000, 400_000, 3_000_000]);
    await pool.query(`update ${schema}.claim_checks set body = $1 where size = 400000`, [randomBytes(400_000)]);

    await withRelay(startRelay(schema), async () => {
      await waitAllSent(pool, schema);
    });
    const read = await readTopic(connection, topic, 1, { expected: 4 });
    expectExactlyOnce(read, ids);
    // The records themselves stay small: a reference with size and sha256.
    const bigRecord = read.find((m) => headerValue(m, 'outbox-id') === ids[0])!;
    expect(bigRecord.value!.length).toBeLessThan(300);
    expect(headerValue(bigRecord, CLAIM_CHECK_HEADER)).toBe('postgres');
    expect(JSON.parse(bigRecord.value!.toString())).toMatchObject({ v: 1, store: 'postgres', size: 3_000_000, sha256: sha256(big) });
    expect(headerValue(read.find((m) => headerValue(m, 'outbox-id') === ids[1])!, CLAIM_CHECK_HEADER)).toBeUndefined();

    const seen = new Map<string, ConsumedRecord>();
    const consumer = testConsumer({
      schema,
      topics: [topic],
      fromBeginning: true,
      maxAttempts: 3,
      claimCheck: postgresClaimCheckStore({ schema, pool }),
      handler: async (record) => {
        seen.set(record.headers.outboxId!, record);
      },
    });
    await consumer.start();
    try {
      await waitFor(async () => seen.size === 3 && (await pool.query(`select count(*)::int as n from ${schema}.dead_letters`)).rows[0].n === 1, {
        message: 'three records handled, one dead-lettered',
      });
    } finally {
      await consumer.stop();
    }
    expect(sha256(seen.get(ids[0]!)!.value!)).toBe(sha256(big));
    expect(seen.get(ids[0]!)!.claimCheck).toMatchObject({ size: 3_000_000, sha256: sha256(big) });
    expect(seen.get(ids[1]!)!.value!.toString()).toBe('small, inline');
    expect(seen.get(ids[1]!)!.claimCheck).toBeUndefined();
    expect(sha256(seen.get(ids[2]!)!.value!)).toBe(sha256(medium));
    expect(seen.has(ids[3]!)).toBe(false);
    const { rows: dead } = await pool.query(`select error, attempts from ${schema}.dead_letters`);
    expect(dead[0].error).toMatch(/does not match its reference/);
    expect(dead[0].attempts).toBe(1); // a body that does not match will never match: no retries
  });

  it('enqueue refuses a body over claimCheck.maxBodyBytes and a header of the claim-check name, writing nothing', async () => {
    const schema = await freshSchema(pool);
    const store = postgresClaimCheckStore({ schema });
    const client = await pool.connect();
    try {
      await client.query('begin');
      await expect(
        enqueue(client, [{ topic: 't', payload: 'ok' }, { topic: 't', payload: randomBytes(2_000_000) }], { schema, claimCheck: { store, maxBodyBytes: 1_000_000 } }),
      ).rejects.toMatchObject({ code: 'INVALID_EVENT', field: 'payload', index: 1 });
      await expect(enqueue(client, { topic: 't', payload: 'x', headers: { [CLAIM_CHECK_HEADER]: 'postgres' } }, { schema })).rejects.toMatchObject({
        code: 'INVALID_EVENT',
      });
      const { rows } = await client.query(`select (select count(*)::int from ${schema}.messages) as m, (select count(*)::int from ${schema}.claim_checks) as c`);
      expect(rows[0]).toEqual({ m: 0, c: 0 });
      await client.query('rollback');
    } finally {
      client.release();
    }
  });

  it('retention keeps a body while its row is unsent, and deletes it once the sent row is past retention', async () => {
    const schema = await freshSchema(pool);
    const store = postgresClaimCheckStore({ schema });
    const [unsent, sent] = await inTransaction(pool, (client) =>
      enqueue(client, [{ topic: 't', payload: randomBytes(300_000) }, { topic: 't', payload: randomBytes(300_000) }], { schema, claimCheck: { store } }),
    );
    // Both bodies written two weeks ago; one row sent then, the other still waiting.
    await pool.query(`update ${schema}.claim_checks set created_at = now() - interval '14 days'`);
    await pool.query(`update ${schema}.messages set state = 'sent', sent_at = now() - interval '14 days' where id = $1`, [sent]);
    const { rows: linked } = await pool.query(`select message_id::text from ${schema}.claim_checks order by message_id`);
    expect(linked.map((r) => r.message_id)).toEqual([unsent, sent]);
    const { purgeSentRows } = await import('../../src/relay/retention.js');
    const { createLogger } = await import('../../src/log.js');
    await purgeSentRows(pool, `"${schema}"`, { keepMs: 7 * 86_400_000, batchSize: 100, partitioned: false }, new AbortController().signal, createLogger({ level: 'silent' }));
    const { rows } = await pool.query(`select message_id::text from ${schema}.claim_checks`);
    expect(rows.map((r) => r.message_id)).toEqual([unsent]);
  });
});
