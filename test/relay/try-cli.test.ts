import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import type { TryReport } from '../../src/ops/try.js';
import { spawnTracked } from '../support/children.js';
import { cli } from '../support/cli.js';
import { databaseUrl } from '../support/db.js';
import { kafkaConnection } from '../support/kafka.js';
import { waitFor } from '../support/wait.js';
import { freshTopic } from '../support/kafka.js';
import { useTestServices } from '../support/services.js';

/** Schemas and topics a try leaves behind: none. */
async function leftovers(services: ReturnType<typeof useTestServices>): Promise<{ schemas: string[]; topics: string[] }> {
  const { rows } = await services.pool.query<{ name: string }>(`select nspname as name from pg_namespace where nspname like 'outbox_try_%'`);
  const topics = (await services.admin.listTopics()).filter((t) => t.startsWith('outbox-relay.try.'));
  return { schemas: rows.map((r) => r.name), topics };
}

describe('outbox-relay try: settings compared on the real cluster', () => {
  const services = useTestServices();
  const { admin, producer } = services;

  it('a run with each preset publishes every event once and reports its figures, and leaves nothing behind', { timeout: 180_000 }, async () => {
    const before = await leftovers(services);
    for (const preset of ['reliable', 'throughput', 'low-latency']) {
      const run = await cli('try', '--preset', preset, '--events', '2000', '--key-buckets', '50', '--json');
      expect(run.stderr).toBe('');
      expect(run.code).toBe(0);
      const report = JSON.parse(run.stdout) as TryReport;
      expect(report).toMatchObject({ preset, events: 2000, duplicates: 0, missing: 0, partitions: 6 });
      expect(report.publishedPerSec).toBeGreaterThan(0);
      expect(report.latencyMs.p99).toBeGreaterThanOrEqual(report.latencyMs.p50);
      expect(Object.values(report.partitionHistogram).reduce((a, b) => a + b, 0)).toBe(2000);
      expect(report.batches).toBeGreaterThan(0);
      expect(report.meanBatchSize).toBeGreaterThan(0);
      expect(report.samples).toHaveLength(10);
      expect(report.samples[0]).toEqual({ key: expect.stringMatching(/^key-\d+$/), partition: expect.any(Number), offset: expect.any(Number) });
      expect(report.compression).toBe({ reliable: 'zstd', throughput: 'lz4', 'low-latency': 'lz4' }[preset]);
    }
    expect(await leftovers(services)).toEqual(before);
  });

  it('a hot key (two buckets) shows as skew in the histogram and the printed verdict', { timeout: 120_000 }, async () => {
    const hot = JSON.parse((await cli('try', '--key-buckets', '2', '--events', '1000', '--json')).stdout) as TryReport;
    // Two keys fill at most two of the six partitions: the fullest holds at least half.
    expect(Object.values(hot.partitionHistogram).filter((n) => n > 0).length).toBeLessThanOrEqual(2);
    expect(hot.skew).toBeGreaterThanOrEqual(3);
    expect(hot).toMatchObject({ duplicates: 0, missing: 0 });
    const even = JSON.parse((await cli('try', '--key-buckets', '600', '--events', '1200', '--json')).stdout) as TryReport;
    expect(even.skew).toBeLessThan(1.5);

    const printed = await cli('try', '--key-buckets', '1', '--events', '200');
    expect(printed.code).toBe(0);
    expect(printed.stdout).toMatch(/skew 6: uneven/);
    expect(printed.stdout).toContain('exactly once: every event read back once');
    expect(printed.stdout).toMatch(/key-0 -> \d+ @ \d+/);
  });

  it('a topic that holds records is refused unless --force, and then only the try\'s records are counted', { timeout: 120_000 }, async () => {
    const topic = await freshTopic(admin, 2);
    await producer.send(topic, [{ key: 'theirs', value: 'not ours' }]);
    const refused = await cli('try', '--topic', topic, '--events', '100');
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain(`topic ${topic} already holds data`);
    expect(refused.stderr).toContain('--force');

    const forced = JSON.parse((await cli('try', '--topic', topic, '--force', '--events', '100', '--json')).stdout) as TryReport;
    expect(forced).toMatchObject({ topic, partitions: 2, events: 100, duplicates: 0, missing: 0 });
    expect((await admin.listTopics()).includes(topic)).toBe(true);
  });

  it('an interrupted try (SIGINT) drops what it created and exits 130', { timeout: 120_000 }, async () => {
    const before = await leftovers(services);
    const child = spawnTracked(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'try', '--events', '1000000'], {
      cwd: fileURLToPath(new URL('../..', import.meta.url)),
      env: { ...process.env, DATABASE_URL: databaseUrl(), KAFKA_BROKERS: String(kafkaConnection().brokers), LOG_LEVEL: 'silent' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const exited = once(child, 'exit');
    // Interrupted while it writes: its schema holds rows by then.
    await waitFor(
      async () => {
        const [schema] = (await leftovers(services)).schemas.filter((name) => !before.schemas.includes(name));
        if (schema === undefined) return false;
        const rows = await services.pool.query(`select count(*)::int as n from "${schema}".messages`).catch(() => ({ rows: [{ n: 0 }] }));
        return rows.rows[0].n > 0;
      },
      { timeoutMs: 60_000, message: 'the try writing its rows' },
    );
    child.kill('SIGINT');
    const [code] = (await exited) as [number | null];
    expect(code).toBe(130);
    expect(stderr).toContain('interrupted');
    expect(await leftovers(services)).toEqual(before);
  });

  it.each([
    [['--key-buckets', '0'], '--key-buckets must be an integer in 1..1000000'],
    [['--events', '5000000'], '--events must be an integer in 1..1000000'],
    [['--events', 'many'], '--events must be an integer'],
    [['--preset', 'fastest'], '--preset must be one of reliable, throughput, low-latency'],
    [['--force'], '--force goes with --topic'],
    [['--topic', 'bad topic!'], '--topic: '],
    [['extra'], 'unexpected argument "extra"'],
  ])('bad input %j exits 2 with a clear error and creates nothing', async (args, message) => {
    const before = await leftovers(services);
    const run = await cli('try', ...args);
    expect(run.code).toBe(2);
    expect(run.stderr).toContain(message);
    expect(await leftovers(services)).toEqual(before);
  });

  it('--help describes every flag', async () => {
    const help = await cli('try', '--help');
    expect(help.code).toBe(0);
    for (const flag of ['--preset', '--events', '--key-buckets', '--payload-bytes', '--shards', '--batch-size', '--topic', '--force', '--partitions', '--json']) {
      expect(help.stdout).toContain(flag);
    }
  });
});
