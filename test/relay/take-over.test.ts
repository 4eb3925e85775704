import { describe, expect, it } from 'vitest';
import { createRelay, type Relay } from '../../src/relay/relay.js';
import { freshSchema } from '../support/db.js';
import { FixtureProcess } from '../support/process.js';
import { startRelay, testRelayOptions, waitAllSent, expectPublishedOnce } from '../support/relay.js';
import { useTestServices } from '../support/services.js';
import { scrapeRegistry, sumOf } from '../support/metrics.js';
import { waitFor } from '../support/wait.js';
import { startWriter } from '../support/writer.js';

describe('one relay group serves an outbox; a new layout takes over', () => {
  const { connection, pool, freshOutbox } = useTestServices({ poolSize: 8 });

  it('a relay of a second group refuses to start with a typed error that says how to take over; two groups starting together on a new outbox: one serves', async () => {
    const schema = await freshSchema(pool);
    const [first, second] = await Promise.allSettled([
      startRelay(schema, { group: `${schema}-a`.replaceAll('_', '-') }),
      startRelay(schema, { group: `${schema}-b`.replaceAll('_', '-') }),
    ]);
    const started = [first, second].filter((r): r is PromiseFulfilledResult<Relay> => r.status === 'fulfilled');
    const refused = [first, second].filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    expect(started).toHaveLength(1);
    expect(refused).toHaveLength(1);
    const serving = started[0]!.value;
    try {
      expect(refused[0]!.reason).toMatchObject({ code: 'GROUP_CONFLICT' });
      expect(refused[0]!.reason.message).toContain(`served by relay group ${serving.options.group}`);
      expect(refused[0]!.reason.message).toContain(`--take-over-from ${serving.options.group}`);
      const { rows } = await pool.query(`select relay_group from ${schema}.relay_groups where active`);
      expect(rows.map((r) => r.relay_group)).toEqual([serving.options.group]);
    } finally {
      await serving.stop();
    }
  });

  it('a new group with another shard count takes over while the old group runs and writers commit: every row once, per key in order, the old relays step down', async () => {
    const { schema, topic } = await freshOutbox(6);
    const oldGroup = `${schema}-old`.replaceAll('_', '-');
    const newGroup = `${schema}-new`.replaceAll('_', '-');
    const old = [
      await startRelay(schema, { group: oldGroup, shards: 4, batchSize: 50, relayId: 'old-1' }),
      await startRelay(schema, { group: oldGroup, shards: 4, batchSize: 50, relayId: 'old-2' }),
    ];
    const retired: string[] = [];
    for (const relay of old) relay.events.on('retired', ({ successor }) => retired.push(`${relay.options.relayId}→${successor}`));
    const writer = startWriter(pool, schema, topic, 3_000, 16, 10);
    const fresh: Relay[] = [];
    try {
      await waitFor(async () => (await pool.query(`select count(*)::int as n from ${schema}.messages where state = 'sent'`)).rows[0].n >= 500, {
        message: 'the old group publishing',
      });
      // Both relays of the new layout start together, while the old group publishes.
      const took: number[] = [];
      fresh.push(
        ...(await Promise.all(
          ['new-1', 'new-2'].map(async (relayId) => {
            const relay = createRelay(testRelayOptions(schema, { group: newGroup, shards: 8, batchSize: 50, relayId, takeOverFrom: oldGroup }));
            relay.events.on('tookOver', ({ reconciled }) => took.push(reconciled));
            await relay.start();
            return relay;
          }),
        )),
      );
      expect(took).toHaveLength(1); // one relay did the take-over; the other found it done
      await waitFor(() => retired.length === 2, { message: 'both old relays stepped down' });
      expect(retired.sort()).toEqual([`old-1→${newGroup}`, `old-2→${newGroup}`]);
      const { rows: groups } = await pool.query(`select relay_group, active, retired_at is not null as retired from ${schema}.relay_groups order by relay_group`);
      expect(groups).toEqual([
        { relay_group: newGroup, active: true, retired: false },
        { relay_group: oldGroup, active: false, retired: true },
      ]);
      await writer.done;
      await waitAllSent(pool, schema, 90_000);
      await expectPublishedOnce(connection, topic, 6, writer.ids, { expected: 3_000, timeoutMs: 90_000 });

      // An old relay started again after the take-over refuses, naming the group that serves now.
      const late = createRelay(testRelayOptions(schema, { group: oldGroup, shards: 4 }));
      await expect(late.start()).rejects.toMatchObject({ code: 'GROUP_CONFLICT', message: expect.stringContaining(`served by relay group ${newGroup}`) });
    } finally {
      await Promise.all([...old, ...fresh].map((r) => r.stop()));
    }
  });

  it('a batch the old group committed to Kafka and never marked (killed in between) is reconciled by the take-over, not published again', async () => {
    const { schema, topic } = await freshOutbox(3);
    const oldGroup = `${schema}-old`.replaceAll('_', '-');
    const newGroup = `${schema}-new`.replaceAll('_', '-');
    const { rows } = await pool.query(
      `insert into ${schema}.messages (topic, key, payload) select $1, 'k' || (i % 7), convert_to('v' || i, 'UTF8') from generate_series(1, 400) i returning id::text`,
      [topic],
    );
    const ids = rows.map((r) => r.id as string);
    const config = { ...testRelayOptions(schema, { group: oldGroup, shards: 2, batchSize: 50 }), logger: undefined };
    const killed = new FixtureProcess('relay-process.ts', { RELAY_CONFIG: JSON.stringify({ ...config, killAt: 'after-kafka-commit', killOnHit: 2 }) });
    const exit = await killed.exited;
    expect(exit.signal).toBe('SIGKILL');
    const { rows: unmarked } = await pool.query(`select count(*)::int as n from ${schema}.messages where state <> 'sent'`);
    expect(unmarked[0].n).toBeGreaterThan(0);

    // Taken over at once: the killed relay's lease still runs, so the take-over waits it out.
    const relay = createRelay(testRelayOptions(schema, { group: newGroup, shards: 3, takeOverFrom: oldGroup }));
    let reconciled = -1;
    relay.events.on('tookOver', (e) => (reconciled = e.reconciled));
    await relay.start();
    try {
      expect(reconciled).toBeGreaterThan(0);
      expect(sumOf(await scrapeRegistry(relay.metrics), 'relay_checkpoints_reconciled_total')).toBeGreaterThan(0);
      await waitAllSent(pool, schema);
      await expectPublishedOnce(connection, topic, 3, ids, { expected: 400 });
    } finally {
      await relay.stop();
    }
  });
});
