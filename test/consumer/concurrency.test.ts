import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { databaseUrl, freshSchema } from '../support/db.js';
import { freshTopic } from '../support/kafka.js';
import { useTestServices } from '../support/services.js';
import { waitFor } from '../support/wait.js';
import { createEffectsTable, effectCounts, effectTotal, exactlyOnceReport, testConsumer } from '../support/consumer.js';

describe('consumer: partition concurrency', () => {
  const { pool, admin, producer, consumers, startConsumer, freshOutbox } = useTestServices();

  it('more busy partitions than pool connections never fail a fetch: batches queue for the partition cap, not for the pool', { timeout: 90_000 }, async () => {
    const schema = await freshSchema(pool);
    await createEffectsTable(pool, schema);
    const partitions = 12;
    const topic = await freshTopic(admin, partitions);
    // A small pool with a short connect timeout: more batches than connections at once
    // would fail their connect and the whole fetch with them.
    const small = new pg.Pool({ connectionString: databaseUrl(), max: 4, connectionTimeoutMillis: 1_000 });
    small.on('error', () => undefined);
    let running = 0;
    let most = 0;
    const consumer = testConsumer({
      pool: small,
      databaseUrl: undefined,
      schema,
      topics: [topic],
      handler: async (record, tx) => {
        running++;
        most = Math.max(most, running);
        try {
          await tx.query(`insert into "${schema}".effects (record_key, topic, partition, "offset") select $1, $2, $3, $4 from pg_sleep(0.25)`, [
            record.value!.toString(),
            record.topic,
            record.partition,
            record.offset,
          ]);
        } finally {
          running--;
        }
      },
    });
    consumers.push(consumer);
    const errors: unknown[] = [];
    consumer.on('error', (e) => errors.push(e.error));
    const values = Array.from({ length: partitions * 4 }, (_, i) => `r${i}`);
    await producer.send(topic, values.map((v, i) => ({ key: v, value: v, partition: i % partitions })));
    await consumer.start();
    try {
      await waitFor(async () => (await effectTotal(pool, schema)) >= values.length, { timeoutMs: 60_000, message: 'every record applied' });
    } finally {
      await consumer.stop();
      await small.end();
    }
    expect(errors).toEqual([]);
    expect(most).toBeLessThanOrEqual(3);
    expect(most).toBeGreaterThan(1);
    expect(exactlyOnceReport(await effectCounts(pool, schema), values)).toEqual({ duplicates: [], missing: [], unexpected: [] });
  });

  it('partitionConcurrency above the pool size - 1 is refused at start', async () => {
    const { schema, topic } = await freshOutbox(1);
    const consumer = testConsumer({ schema, topics: [topic], handler: async () => undefined, poolSize: 4, partitionConcurrency: 4 });
    await expect(consumer.start()).rejects.toMatchObject({ code: 'INVALID_OPTIONS', message: expect.stringContaining('partitionConcurrency') });
    await consumer.stop();
  });
  it('partitions with backlogs are served side by side: none waits for another to drain', { timeout: 90_000 }, async () => {
    const schema = await freshSchema(pool);
    const partitions = 6;
    const topic = await freshTopic(admin, partitions);
    // A backlog on every partition, well under librdkafka's default 1 MiB per-partition
    // fetch (the values do not compress: a fetch limit counts compressed bytes).
    const perPartition = 2_000;
    for (let partition = 0; partition < partitions; partition++) {
      await producer.send(topic, Array.from({ length: perPartition }, (_, i) => ({ key: `k${partition}`, value: `${partition}-${i}-${randomBytes(80).toString('hex')}`, partition })));
    }
    const applied = new Array<number>(partitions).fill(0);
    const consumer = await startConsumer({
      schema,
      topics: [topic],
      // A handler that takes its time, as a real one does: the loop is slower than the fetches.
      handler: async (record) => {
        await new Promise((resolve) => setTimeout(resolve, 1));
        applied[record.partition]!++;
      },
    });
    // By the time a third of everything is applied, every partition has had its turn (one
    // after another, two partitions would have drained and the other four had nothing).
    await waitFor(() => applied.reduce((a, b) => a + b, 0) >= (partitions * perPartition) / 3, { timeoutMs: 60_000, message: 'a third applied' });
    expect(applied.map((n) => n > 0)).toEqual(new Array(partitions).fill(true));
    await consumer.stop();
  });
});
