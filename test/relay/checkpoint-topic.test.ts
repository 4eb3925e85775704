import { describe, expect, it } from 'vitest';
import type { KafkaAdmin } from '../../src/kafka/admin.js';
import { createLogger } from '../../src/log.js';
import { createRelay } from '../../src/relay/relay.js';
import { freshSchema } from '../support/db.js';
import { FixtureProcess } from '../support/process.js';
import { drainOutbox, expectPublishedOnce, startRelay, testRelayOptions, waitAllSent } from '../support/relay.js';
import { useTestServices } from '../support/services.js';
import { waitFor } from '../support/wait.js';

async function deleteTopic(admin: KafkaAdmin, topic: string): Promise<void> {
  await admin.deleteTopic(topic);
  await waitFor(async () => !(await admin.listTopics()).includes(topic), { message: `topic ${topic} deleted` });
}

describe('the checkpoint topic', () => {
  const { connection, pool, admin, freshOutbox } = useTestServices({ poolSize: 6 });

  it('deleted and created again, a batch committed to its new incarnation and never marked is reconciled, not published twice', { timeout: 120_000 }, async () => {
    const { schema, topic } = await freshOutbox(1);
    const options = testRelayOptions(schema, { shards: 1, batchSize: 50 });
    const insert = async (n: number) =>
      (
        await pool.query(
          `insert into ${schema}.messages (topic, key, payload) select $1, 'k' || (i % 5), convert_to('v' || i, 'UTF8') from generate_series(1, $2::int) i returning id::text`,
          [topic, n],
        )
      ).rows.map((r) => r.id as string);
    // Four batches: one checkpoint and one commit marker each, so the cursor ends at offset 6.
    const first = await insert(200);
    const relay = await startRelay(schema, options);
    await waitAllSent(pool, schema);
    await relay.stop();
    const { rows: cursor } = await pool.query(`select checkpoint_offset::int as offset, checkpoint_topic_id from ${schema}.relay_shards`);
    expect(cursor[0].offset).toBe(6);
    expect(cursor[0].checkpoint_topic_id).toMatch(/.+/);

    await deleteTopic(admin, options.checkpointTopic ?? `outbox-relay.checkpoints.${options.group}`);
    // The next relay creates the topic again; its fourth checkpoint lands at offset 6 again,
    // exactly the old cursor, and the relay is killed before marking that batch.
    const second = await insert(200);
    const killed = new FixtureProcess('relay-process.ts', {
      RELAY_CONFIG: JSON.stringify({ ...options, logger: undefined, killAt: 'after-kafka-commit', killOnHit: 4 }),
    });
    expect((await killed.exited).signal).toBe('SIGKILL');
    const { rows: unmarked } = await pool.query(`select count(*)::int as n from ${schema}.messages where state <> 'sent'`);
    expect(unmarked[0].n).toBe(50);

    // The survivor marks the batch the killed relay committed and never marked, from its checkpoint.
    expect(await drainOutbox(pool, schema, options)).toBe(50);
    await expectPublishedOnce(connection, topic, 1, [...first, ...second], { expected: 400 });
  });

  it('a checkpoint topic with fewer partitions than shards fails start() in strict mode and is reported as an error otherwise', async () => {
    const schema = await freshSchema(pool);
    const options = testRelayOptions(schema, { shards: 4 });
    const checkpointTopic = `${options.group}.checkpoints`;
    await admin.createTopic({ topic: checkpointTopic, num_partitions: 1, replication_factor: 1, config: { 'cleanup.policy': 'compact' } });
    const strict = createRelay({ ...options, checkpointTopic, strict: true });
    await expect(strict.start()).rejects.toMatchObject({
      code: 'TOPIC_UNSAFE',
      message: expect.stringContaining(`checkpoint topic ${checkpointTopic}: it has 1 partitions for 4 shards`),
    });
    const lines: string[] = [];
    const relay = createRelay({
      ...options,
      checkpointTopic,
      logger: createLogger({ level: 'error', destination: { write: (line: string) => void lines.push(line) } }),
    });
    await relay.start();
    try {
      expect(lines.some((l) => l.includes('checkpoint topic settings put exactly-once at risk') && l.includes('1 partitions for 4 shards'))).toBe(true);
    } finally {
      await relay.stop();
    }
  });
});
