import { describe, expect, it } from 'vitest';
import { readTopic } from '../support/kafka.js';
import { FixtureProcess } from '../support/process.js';
import { countByOutboxId, expectExactlyOnce, expectPerKeyOrder, testRelayOptions, waitAllSent } from '../support/relay.js';
import { startWriter } from '../support/writer.js';
import { useTestServices } from '../support/services.js';

describe('relay crashes', () => {
  const { connection, pool, freshOutbox } = useTestServices({ poolSize: 8 });

  it('a relay SIGKILLed repeatedly while writers commit, and once between the Kafka commit and the Postgres mark: every row exactly once', { timeout: 180_000 }, async () => {
    const { schema, topic } = await freshOutbox(3);
    const options = testRelayOptions(schema, { batchSize: 50 });
    const config = { ...options, logger: undefined };
    const writer = startWriter(pool, schema, topic, 2_000);
    const kills: string[] = [];

    // Random points: after the k-th published batch of each run (k in 1..4), the kill
    // lands somewhere in the next cycle (claim, produce, commit or mark).
    for (let run = 0; run < 6; run++) {
      const relay = new FixtureProcess('relay-process.ts', { RELAY_CONFIG: JSON.stringify(config) });
      await relay.waitForEvent('batch', 1 + Math.floor(Math.random() * 4), 90_000);
      await relay.kill('SIGKILL');
      kills.push(`random after ${relay.count('batch')} batches`);
    }

    // Precisely between the Kafka commit and the Postgres mark.
    const precise = new FixtureProcess('relay-process.ts', {
      RELAY_CONFIG: JSON.stringify({ ...config, killAt: 'after-kafka-commit', killOnHit: 2 }),
    });
    const exit = await precise.exited;
    expect(exit.signal).toBe('SIGKILL');
    expect(precise.count('killing')).toBe(1);
    kills.push('after-kafka-commit');
    const { rows: unmarked } = await pool.query(`select count(*)::int as n from ${schema}.messages where state <> 'sent'`);
    expect(unmarked[0].n).toBeGreaterThan(0);

    await writer.done;
    const survivor = new FixtureProcess('relay-process.ts', { RELAY_CONFIG: JSON.stringify(config) });
    try {
      await waitAllSent(pool, schema, 120_000);
      // The survivor found the killed relay's committed-but-unmarked batch in its checkpoint.
      expect(survivor.events.some((e) => e.event === 'reconciled' && Number(e.marked) > 0)).toBe(true);
    } finally {
      await survivor.kill('SIGTERM');
    }

    const read = await readTopic(connection, topic, 3, { expected: writer.ids.length, timeoutMs: 120_000 });
    const counts = countByOutboxId(read);
    const duplicates = [...counts.values()].filter((n) => n > 1).length;
    console.info(`crash test: rows=${writer.ids.length} kills=${kills.length} records=${read.length} duplicates=${duplicates}`);
    expect(writer.ids).toHaveLength(2_000);
    expectExactlyOnce(read, writer.ids);
    expectPerKeyOrder(read);
  });
});
