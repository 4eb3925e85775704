import type { AddressInfo } from 'node:net';
import { describe, expect, it } from 'vitest';
import { useTestServices } from '../support/services.js';
import { waitFor } from '../support/wait.js';
import { effectCounts, effectHandler } from '../support/consumer.js';

describe('consumer metrics over HTTP', () => {
  const { pool, producer, freshEffects, startConsumer } = useTestServices();

  it('consumer.listen serves /metrics with records applied per topic and lag per partition, and /healthz', async () => {
    const { schema, topic } = await freshEffects(2);
    const keys = Array.from({ length: 20 }, (_, i) => `m${i}`);
    await producer.send(topic, keys.map((k) => ({ key: k, value: k })));
    const consumer = await startConsumer({ schema, topics: [topic], handler: effectHandler(schema) });
    const server = await consumer.listen({ port: 0 });
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    await waitFor(async () => (await effectCounts(pool, schema)).size === keys.length);

    const metricsText = async () => (await fetch(`${base}/metrics`)).text();
    await waitFor(async () => new RegExp(`consumer_records_applied_total\\{group="[^"]+",topic="${topic}"\\} 20`).test(await metricsText()), {
      message: 'applied count exported',
    });
    const text = await metricsText();
    expect(text).toContain('# TYPE consumer_lag_records gauge');
    for (const partition of [0, 1]) {
      expect(text).toMatch(new RegExp(`consumer_lag_records\\{group="[^"]+",topic="${topic}",partition="${partition}"\\} 0`));
    }
    expect(await (await fetch(`${base}/healthz`)).json()).toMatchObject({ status: 'ok', partitions: 2 });
    await consumer.stop();
    await expect(fetch(`${base}/healthz`)).rejects.toThrow();
  });
});
