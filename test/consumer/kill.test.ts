import type { ChildProcess } from 'node:child_process';
import { spawnTracked } from '../support/children.js';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { databaseUrl } from '../support/db.js';
import { kafkaConnection } from '../support/kafka.js';
import { uniqueName, waitFor } from '../support/wait.js';
import { effectCounts, effectTotal, exactlyOnceReport } from '../support/consumer.js';
import { useTestServices } from '../support/services.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const KILLS = 4;
/** Records keep flowing until the last kill, with at least this many and at most `MAX_RECORDS`. */
const MIN_RECORDS = 600;
const MAX_RECORDS = 2_000;

describe('consumer: crash safety', () => {
  const { pool, producer, freshEffects } = useTestServices();
  const children: ChildProcess[] = [];

  afterAll(() => {
    for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });

  it('a consumer process SIGKILLed repeatedly mid-batch applies every record exactly once', { timeout: 150_000 }, async () => {
    const { schema, topic } = await freshEffects(3);
    const group = uniqueName('g');

    function spawnConsumer(name: string): ChildProcess {
      const child = spawnTracked(process.execPath, ['--import', 'tsx', 'test/support/processes/consumer-ledger.ts'], {
        cwd: root,
        env: {
          ...process.env,
          DATABASE_URL: databaseUrl(),
          KAFKA_BROKERS: String(kafkaConnection().brokers),
          TEST_SCHEMA: schema,
          TEST_TOPIC: topic,
          TEST_GROUP: group,
          TEST_CONSUMER_NAME: name,
        },
        stdio: ['ignore', 'ignore', 'inherit'],
      });
      children.push(child);
      return child;
    }
    async function appliedBy(name: string): Promise<number> {
      const { rows } = await pool.query<{ n: number }>(`select count(*)::int as n from "${schema}".effects where consumer = $1::text`, [name]);
      return rows[0]!.n;
    }

    // Records flow during all the kills, one Kafka transaction of 10 at a time.
    const produced: string[] = [];
    let kills = 0;
    const flow = (async () => {
      for (let batch = 0; (kills < KILLS || produced.length < MIN_RECORDS) && produced.length < MAX_RECORDS; batch++) {
        const keys = Array.from({ length: 10 }, (_, i) => `b${batch}-${i}`);
        await producer.send(topic, keys.map((k) => ({ key: k, value: k })));
        produced.push(...keys);
        await new Promise((resolve) => setTimeout(resolve, 120)); // pacing, not synchronisation
      }
    })();

    for (let i = 0; i < KILLS; i++) {
      const name = `victim-${i}`;
      const child = spawnConsumer(name);
      // Kill once it is applying records, at a point that varies with the run.
      const threshold = 20 + Math.floor(Math.random() * 60);
      await waitFor(async () => (await appliedBy(name)) >= threshold, { timeoutMs: 60_000, intervalMs: 20, message: `${name} applies records` });
      child.kill('SIGKILL');
      await once(child, 'exit');
      kills++;
    }
    await flow;

    const survivor = spawnConsumer('survivor');
    await waitFor(async () => (await effectTotal(pool, schema)) >= produced.length, { timeoutMs: 90_000, message: 'all records applied' });
    survivor.kill('SIGTERM');
    await once(survivor, 'exit');

    const counts = await effectCounts(pool, schema);
    const report = exactlyOnceReport(counts, produced);
    const total = await effectTotal(pool, schema);
    console.log(`kill test: ${produced.length} records, ${kills} SIGKILLs, ${report.duplicates.length} duplicate effects, ${total} effects`);
    expect(report).toEqual({ duplicates: [], missing: [], unexpected: [] });
    expect([...counts.values()].every((n) => n === 1)).toBe(true);
    expect(total).toBe(produced.length);
  });
});
