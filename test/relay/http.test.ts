import type { AddressInfo } from 'node:net';
import { describe, expect, it } from 'vitest';
import { serveRelayHttp } from '../../src/relay/http.js';
import { createLogger } from '../../src/log.js';
import { cli } from '../helpers/cli.js';
import { freshSchema } from '../helpers/db.js';
import { freshTopic } from '../helpers/kafka.js';
import { startRelay, waitAllSent } from '../helpers/relay.js';
import { useTestServices } from '../helpers/services.js';
import { waitFor } from '../helpers/wait.js';

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Prometheus text exposition format, samples only (# HELP / # TYPE lines checked apart). */
function parseMetrics(text: string): Sample[] {
  const samples: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!match) throw new Error(`not a sample line: ${line}`);
    const labels: Record<string, string> = {};
    for (const [, k, v] of (match[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[k!] = v!;
    samples.push({ name: match[1]!, labels, value: Number(match[3]) });
  }
  return samples;
}

describe('the relay over HTTP: health, readiness, metrics, status', () => {
  const { pool, admin } = useTestServices();

  it('answers /healthz, /readyz, /metrics in Prometheus format with bounded labels, and /api/status; not ready once stopped', async () => {
    const schema = await freshSchema(pool);
    const topic = await freshTopic(admin, 2);
    const relay = await startRelay(schema, { shards: 2 });
    const server = await serveRelayHttp(relay, { host: '127.0.0.1', port: 0 }, createLogger({ level: 'silent' }));
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    try {
      await pool.query(`insert into ${schema}.messages (topic, key, payload) select $1, 'k' || (i % 7), 'v' from generate_series(1, 120) i`, [topic]);
      await waitAllSent(pool, schema);
      await pool.query(`insert into ${schema}.messages (topic, key, payload, state, attempts) values ($1, 'stuck', 'x', 'dead', 10)`, [topic]);

      expect(await (await fetch(`${base}/healthz`)).json()).toEqual({ status: 'ok' });
      await waitFor(() => relay.shards.length === 2);
      const ready = await fetch(`${base}/readyz`);
      expect(ready.status).toBe(200);
      expect(await ready.json()).toMatchObject({ ready: true, reason: 'publishing', shards: [0, 1] });

      const response = await fetch(`${base}/metrics`);
      expect(response.headers.get('content-type')).toMatch(/^text\/plain; version=0.0.4/);
      const text = await response.text();
      for (const type of ['relay_batch_duration_seconds histogram', 'relay_commit_to_publish_seconds histogram', 'relay_published_records_total counter', 'outbox_unsent_rows gauge']) {
        expect(text).toContain(`# TYPE ${type}`);
      }
      const samples = parseMetrics(text);
      const one = (name: string, labels: Record<string, string> = {}) =>
        samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v)).reduce((a, s) => a + s.value, 0);
      expect(one('relay_published_records_total', { topic })).toBe(120);
      expect(one('relay_batches_total')).toBeGreaterThanOrEqual(1);
      expect(one('relay_commit_to_publish_seconds_count')).toBe(120);
      expect(one('relay_batch_duration_seconds_count')).toBe(one('relay_batches_total'));
      expect(one('relay_shards_owned')).toBe(2);
      expect(one('outbox_unsent_rows', { topic, state: 'dead' })).toBe(1);
      expect(one('outbox_oldest_unsent_age_seconds', { topic })).toBeGreaterThanOrEqual(0);
      expect(samples.some((s) => s.name === 'process_cpu_user_seconds_total')).toBe(true);
      // Bounded labels only: never ids, keys or error texts.
      const labelNames = new Set(samples.filter((s) => /^(relay|outbox)_/.test(s.name)).flatMap((s) => Object.keys(s.labels)));
      expect([...labelNames].sort()).toEqual(['le', 'reason', 'state', 'topic'].filter((l) => labelNames.has(l)));

      const status = await (await fetch(`${base}/api/status`)).json();
      expect(status).toMatchObject({ verdict: 'STUCK', unsent: { dead: 1 }, relay: { shards: 2 } });
      expect((await fetch(`${base}/nope`)).status).toBe(404);
      expect((await fetch(`${base}/healthz`, { method: 'POST' })).status).toBe(405);
    } finally {
      await relay.stop();
    }
    try {
      const stopped = await fetch(`${base}/readyz`);
      expect(stopped.status).toBe(503);
      expect(await stopped.json()).toMatchObject({ ready: false, reason: 'stopping' });
    } finally {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  });

  it('the relay command refuses a malformed --http address with exit 2', async () => {
    const result = await cli('relay', '--http', 'localhost:99999', '--schema', 'unused');
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(/--http must be off, a port, or host:port/);
  });
});
