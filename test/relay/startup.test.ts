import { describe, expect, it } from 'vitest';
import { createRelay } from '../../src/relay/relay.js';
import { unsentTopicsSql } from '../../src/sql/outbox-inspect.js';
import { freshSchema } from '../support/db.js';
import { testRelayOptions } from '../support/relay.js';
import { useTestServices } from '../support/services.js';

describe('relay start-up', () => {
  const { pool } = useTestServices();

  it('the start-up topic check reads only unsent rows, through the index of publishable rows, however many sent rows are kept', async () => {
    const schema = await freshSchema(pool);
    // A week of retained sent rows and a handful waiting.
    await pool.query(
      `insert into ${schema}.messages (topic, key, payload, state, sent_at, kafka_partition, kafka_offset)
       select 'sent-' || (i % 50), 'k' || i, 'x', 'sent', now(), 0, i from generate_series(1, 50000) i`,
    );
    await pool.query(`insert into ${schema}.messages (topic, key, payload) values ('orders', 'a', 'p'), ('payments', 'b', 'p'), ('orders', 'c', 'p')`);
    await pool.query(`analyze ${schema}.messages`);
    const { rows } = await pool.query(unsentTopicsSql(schema));
    expect(rows.map((r) => r.topic).sort()).toEqual(['orders', 'payments']);
    const plan = JSON.stringify((await pool.query(`explain (format json) ${unsentTopicsSql(schema)}`)).rows[0]['QUERY PLAN']);
    expect(plan).toContain('messages_publishable_idx');
    expect(plan).not.toContain('"Seq Scan"');
  });
});

describe('relay start-up against what the brokers refuse', () => {
  const { pool } = useTestServices();

  it('a transaction timeout above the brokers\' limit fails start() with an actionable error instead of failing every shard forever', async () => {
    const schema = await freshSchema(pool);
    const relay = createRelay(testRelayOptions(schema, { transactionTimeoutMs: 1_000_000 }));
    await expect(relay.start()).rejects.toMatchObject({ code: 'INVALID_OPTIONS', message: expect.stringContaining('transaction.max.timeout.ms') });
    expect(relay.shards).toEqual([]);
    await relay.stop();
  });
});
