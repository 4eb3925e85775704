import { describe, expect, it } from 'vitest';
import { createRelay } from '../../src/relay/relay.js';
import { freshSchema } from '../support/db.js';
import { freshTopic, readTopic } from '../support/kafka.js';
import { FixtureProcess } from '../support/process.js';
import { expectExactlyOnce, startRelay, testRelayOptions, waitAllSent } from '../support/relay.js';
import { waitFor } from '../support/wait.js';
import { useTestServices } from '../support/services.js';

describe('relay groups', () => {
  const { connection, pool, admin } = useTestServices();

  it('a relay registering its group while another relay registers it too still starts (sees the winner)', async () => {
    const schema = await freshSchema(pool);
    const options = testRelayOptions(schema);
    const group = options.group!;
    // The other relay: its registration is in, not yet committed.
    const other = await pool.connect();
    try {
      await other.query('begin');
      await other.query(`insert into ${schema}.relay_groups (relay_group, shards, checkpoint_topic) values ($1, 4, $2)`, [
        group,
        `outbox-relay.checkpoints.${group}`,
      ]);
      const relay = createRelay({ ...options, relayId: 'late' });
      const starting = relay.start();
      // Its INSERT now waits on the other relay's uncommitted row.
      await waitFor(async () => {
        const { rows } = await pool.query(
          `select count(*)::int as n from pg_stat_activity where application_name = $1 and wait_event_type = 'Lock'`,
          ['outbox-relay late'],
        );
        return rows[0].n === 1;
      });
      await other.query('commit');
      await starting;
      await relay.stop();
    } finally {
      other.release();
    }
  });

  it('a relay with another shard count than its group refuses to start (keys would change shards)', async () => {
    const schema = await freshSchema(pool);
    const options = testRelayOptions(schema, { shards: 4 });
    const first = await startRelay(schema, options);
    await first.stop();
    const other = createRelay({ ...options, shards: 8 });
    await expect(other.start()).rejects.toMatchObject({ code: 'INVALID_OPTIONS', message: expect.stringContaining('has 4 shards') });
  });

  it('checkpoints written for another database under the same group name never mark our rows', async () => {
    // Two outbox databases (schemas here) wrongly share a relay group name on one cluster.
    const [schemaA, schemaB] = [await freshSchema(pool), await freshSchema(pool)];
    const [topicA, topicB] = [await freshTopic(admin, 1), await freshTopic(admin, 1)];
    const insert = (schema: string, topic: string) =>
      pool.query(`insert into ${schema}.messages (topic, key, payload) select $1, 'k', convert_to('v' || i, 'UTF8') from generate_series(1, 20) i returning id::text`, [topic]);
    await insert(schemaA, topicA);
    const { rows: rowsB } = await insert(schemaB, topicB); // same ids 1..20 as in A
    const options = testRelayOptions(schemaA, { shards: 1 });

    // A's relay commits a batch to Kafka and dies before marking it: its checkpoint lists ids 1..20.
    const crashed = new FixtureProcess('relay-process.ts', {
      RELAY_CONFIG: JSON.stringify({ ...options, logger: undefined, killAt: 'after-kafka-commit' }),
    });
    expect((await crashed.exited).signal).toBe('SIGKILL');

    // B's relay, same group name, reads that checkpoint on take-over and must ignore it.
    const errors: unknown[] = [];
    const relayB = await startRelay(schemaB, { ...options, schema: schemaB });
    relayB.events.on('error', (e) => errors.push(e.error));
    try {
      await waitAllSent(pool, schemaB);
    } finally {
      await relayB.stop();
    }
    const read = await readTopic(connection, topicB, 1, { expected: 20 });
    expectExactlyOnce(read, rowsB.map((r) => r.id));
  });
});
