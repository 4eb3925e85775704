import { describe, expect, it } from 'vitest';
import { waitFor } from '../support/wait.js';
import { effectCounts, effectHandler, exactlyOnceReport, testConsumer } from '../support/consumer.js';
import { useTestServices } from '../support/services.js';

describe('consumer: watchdog against a real broker', () => {
  const { pool, producer, consumers, freshEffects } = useTestServices();

  it('a consumer whose fetcher silently stopped is rebuilt and catches up', { timeout: 60_000 }, async () => {
    const { schema, topic } = await freshEffects(1);
    const consumer = testConsumer({ schema, topics: [topic], handler: effectHandler(schema), watchdogIntervalMs: 300, stallTimeoutMs: 2_000 });
    consumers.push(consumer);
    const rebuilt: string[] = [];
    consumer.on('rebuilt', (e) => rebuilt.push(e.reason));
    await consumer.start();
    await producer.send(topic, ['a', 'b'].map((k) => ({ key: k, value: k })));
    await waitFor(async () => (await effectCounts(pool, schema)).size === 2, { timeoutMs: 30_000 });
    // Simulate the silent failure: librdkafka stops fetching the partition, nothing errors.
    (consumer as unknown as { s: { client: { pause(p: { topic: string; partition: number }[]): void } } }).s.client.pause([{ topic, partition: 0 }]);
    await producer.send(topic, ['c', 'd'].map((k) => ({ key: k, value: k })));
    await waitFor(() => rebuilt.length > 0, { timeoutMs: 30_000, message: 'watchdog rebuilt the consumer' });
    expect(rebuilt[0]).toMatch(/no progress .* lag > 0/);
    await waitFor(async () => (await effectCounts(pool, schema)).size === 4, { timeoutMs: 30_000 });
    expect(exactlyOnceReport(await effectCounts(pool, schema), ['a', 'b', 'c', 'd'])).toEqual({ duplicates: [], missing: [], unexpected: [] });
  });
});
