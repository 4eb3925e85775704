import type { AddressInfo } from 'node:net';
import { describe, expect, it } from 'vitest';
import { useTestServices } from '../support/services.js';
import { waitFor } from '../support/wait.js';
import { effectCounts, effectHandlerFailing, relayed } from '../support/consumer.js';
import { parseMetrics, sumOf } from '../support/metrics.js';

describe('consumer metrics over HTTP', () => {
  const { pool, producer, freshEffects, startConsumer } = useTestServices();

  it('consumer.listen serves /metrics (applied, skipped by reason, dead letters, lag per partition, process metrics; bounded labels) and /healthz', async () => {
    const { schema, topic } = await freshEffects(2);
    const values = Array.from({ length: 20 }, (_, i) => `m${i}`);
    // 20 records with outbox ids, the first 5 published twice (the inbox skips them), and a poison one.
    await producer.send(topic, relayed(values));
    await producer.send(topic, relayed(values.slice(0, 5)));
    await producer.send(topic, relayed(['poison'], 100));
    const consumer = await startConsumer({
      schema,
      topics: [topic],
      maxAttempts: 2,
      retryMinDelayMs: 10,
      retryMaxDelayMs: 20,
      handler: effectHandlerFailing(schema, (value) => (value === 'poison' ? new Error('cannot apply') : undefined)),
    });
    const server = await consumer.listen({ port: 0 });
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    await waitFor(async () => (await effectCounts(pool, schema)).size === values.length);

    const scrape = async () => {
      const response = await fetch(`${base}/metrics`);
      expect(response.headers.get('content-type')).toMatch(/^text\/plain; version=0.0.4/);
      const text = await response.text();
      return { text, samples: parseMetrics(text) };
    };
    await waitFor(async () => sumOf((await scrape()).samples, 'consumer_dead_letters_total', { topic }) === 1, { message: 'the poison record dead-lettered' });
    const { text, samples } = await scrape();
    for (const type of ['consumer_records_applied_total counter', 'consumer_records_skipped_total counter', 'consumer_dead_letters_total counter', 'consumer_lag_records gauge']) {
      expect(text).toContain(`# TYPE ${type}`);
    }
    expect(sumOf(samples, 'consumer_records_applied_total', { topic })).toBe(20);
    expect(sumOf(samples, 'consumer_records_skipped_total', { reason: 'already-applied' })).toBe(5);
    expect(sumOf(samples, 'consumer_dead_letters_total', { topic })).toBe(1);
    for (const partition of ['0', '1']) {
      expect(samples.filter((s) => s.name === 'consumer_lag_records' && s.labels.topic === topic && s.labels.partition === partition).map((s) => s.value)).toEqual([0]);
    }
    // The process's own metrics, as on the relay's registry.
    expect(samples.some((s) => s.name === 'process_cpu_user_seconds_total')).toBe(true);
    expect(samples.some((s) => s.name === 'nodejs_eventloop_lag_seconds')).toBe(true);
    // Bounded labels only: never ids, keys or error texts.
    const labelNames = new Set(samples.filter((s) => s.name.startsWith('consumer_')).flatMap((s) => Object.keys(s.labels)));
    expect([...labelNames].sort()).toEqual(['group', 'partition', 'reason', 'topic'].filter((l) => labelNames.has(l)));
    expect([...new Set(samples.filter((s) => s.name === 'consumer_records_skipped_total').map((s) => s.labels.reason))]).toEqual(['already-applied']);

    expect(await (await fetch(`${base}/healthz`)).json()).toMatchObject({ status: 'ok', partitions: 2 });
    await consumer.stop();
    await expect(fetch(`${base}/healthz`)).rejects.toThrow();
  });
});
