import { describe, expect, it } from 'vitest';
import pg from 'pg';
import { databaseUrl, freshSchema } from '../helpers/db.js';
import { freshTopic } from '../helpers/kafka.js';
import { uniqueName, waitFor } from '../helpers/wait.js';
import { useTestServices } from '../helpers/services.js';
import { createEffectsTable, effectCounts, effectHandler, effectTotal, exactlyOnceReport, testConsumer } from './harness.js';

describe('consumer: database connections lost', () => {
  const { pool, admin, producer, consumers } = useTestServices();

  it('a consumer whose database connections are terminated again and again, in and between batches, keeps running and applies every record once', { timeout: 120_000 }, async () => {
    const schema = await freshSchema(pool);
    await createEffectsTable(pool, schema);
    const topic = await freshTopic(admin, 3);
    const keys = Array.from({ length: 600 }, (_, i) => `r${i}`);
    const groupId = uniqueName('g');
    // A pool of its own, under a name of its own: only this consumer's sessions are cut.
    const applicationName = uniqueName('cut');
    const own = new pg.Pool({ connectionString: databaseUrl(), application_name: applicationName, max: 5 });
    own.on('error', () => undefined);
    const consumer = testConsumer({ schema, groupId, topics: [topic], handler: effectHandler(schema), batchSize: 20, databaseUrl: undefined, pool: own });
    consumers.push(consumer);
    await consumer.start();
    // Every session of the consumer (its batches, their BEGIN, its offset reads) is
    // terminated every 30 ms while records arrive: a checked-out client whose connection is
    // cut raises 'error', which would end the process if nothing listened.
    let terminating = true;
    let terminated = 0;
    const terminator = (async () => {
      while (terminating) {
        const { rows } = await pool.query<{ n: number }>(
          `select count(pg_terminate_backend(pid))::int as n from pg_stat_activity where application_name = $1 and pid <> pg_backend_pid()`,
          [applicationName],
        );
        terminated += rows[0]!.n;
        await new Promise((resolve) => setTimeout(resolve, 30));
      }
    })();
    try {
      for (let i = 0; i < keys.length; i += 60) await producer.send(topic, keys.slice(i, i + 60).map((k) => ({ key: k, value: k })));
      await waitFor(() => terminated >= 5, { timeoutMs: 30_000, message: 'sessions of the consumer terminated' });
    } finally {
      terminating = false;
      await terminator;
    }
    await waitFor(async () => (await effectTotal(pool, schema)) >= keys.length, { timeoutMs: 60_000, message: 'every record applied' });
    expect(exactlyOnceReport(await effectCounts(pool, schema), keys)).toEqual({ duplicates: [], missing: [], unexpected: [] });
    await consumer.stop();
    await own.end();
  });
});
