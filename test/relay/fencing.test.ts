import { describe, expect, it } from 'vitest';
import { readTopic } from '../support/kafka.js';
import { FixtureProcess } from '../support/process.js';
import { countByOutboxId, expectExactlyOnce, expectPerKeyOrder, startRelay, testRelayOptions, waitAllSent, expectPublishedOnce } from '../support/relay.js';
import { waitFor } from '../support/wait.js';
import { startWriter } from '../support/writer.js';
import { useTestServices } from '../support/services.js';

describe('relay ownership', () => {
  const { connection, pool, freshOutbox } = useTestServices({ poolSize: 8 });

  it('two relays started together never both publish a row, split the shards, and keep per-key order', async () => {
    const { schema, topic } = await freshOutbox(3);
    const options = testRelayOptions(schema, { batchSize: 40 });
    const writer = startWriter(pool, schema, topic, 1_500);
    const [a, b] = await Promise.all([startRelay(schema, options), startRelay(schema, { ...options, relayId: 'second' })]);
    try {
      await writer.done;
      await waitAllSent(pool, schema, 90_000);
      // Within a few lease ticks the shards are divided between the two, without overlap.
      await waitFor(() => a.shards.length === 2 && b.shards.length === 2, { timeoutMs: 30_000, message: 'shards balanced 2/2' });
      expect([...a.shards, ...b.shards].sort()).toEqual([0, 1, 2, 3]);
    } finally {
      await Promise.all([a.stop(), b.stop()]);
    }
    await expectPublishedOnce(connection, topic, 3, writer.ids, { expected: writer.ids.length });
  });

  it('a zombie relay paused past its lease cannot publish after a new owner fenced it', { timeout: 150_000 }, async () => {
    const { schema, topic } = await freshOutbox(3);
    const options = testRelayOptions(schema, { batchSize: 20 });
    const writer = startWriter(pool, schema, topic, 1_500);
    const zombie = new FixtureProcess('relay-process.ts', { RELAY_CONFIG: JSON.stringify({ ...options, logger: undefined, relayId: 'zombie' }) });
    let owner: Awaited<ReturnType<typeof startRelay>> | undefined;
    try {
      await zombie.waitForEvent('batch', 3);
      zombie.child.kill('SIGSTOP'); // paused mid-flight, connections open, leases unrenewed
      owner = await startRelay(schema, { ...options, relayId: 'owner' });
      // The new owner takes every shard once the zombie's leases expire, and publishes.
      await waitFor(() => owner!.shards.length === 4, { timeoutMs: 30_000, message: 'owner took all shards' });
      const published = (await pool.query(`select count(*)::int as n from ${schema}.messages where state = 'sent'`)).rows[0].n;
      await waitFor(
        async () => (await pool.query(`select count(*)::int as n from ${schema}.messages where state = 'sent'`)).rows[0].n > published + 50,
        { message: 'owner publishes' },
      );
      zombie.child.kill('SIGCONT'); // the zombie wakes up believing it owns the shards
      await writer.done;
      await waitAllSent(pool, schema, 90_000);
      // Awake again, the zombie rejoins as a live member: leases are re-divided under new
      // fencing tokens, never shared.
      await waitFor(
        async () => {
          const { rows } = await pool.query(`select owner, count(*)::int as n from ${schema}.relay_shards group by owner order by owner`);
          return rows.length === 2 && rows.every((r) => r.n === 2);
        },
        { timeoutMs: 30_000, message: 'shards re-divided between owner and the woken zombie' },
      );
    } finally {
      await zombie.kill('SIGKILL');
      await owner?.stop();
    }
    const read = await readTopic(connection, topic, 3, { expected: writer.ids.length });
    const duplicates = [...countByOutboxId(read).values()].filter((n) => n > 1).length;
    console.info(`zombie test: rows=${writer.ids.length} records=${read.length} duplicates=${duplicates}`);
    expectExactlyOnce(read, writer.ids);
    expectPerKeyOrder(read);
  });
});
