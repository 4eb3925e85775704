import type { AddressInfo } from 'node:net';
import { describe, expect, it } from 'vitest';
import { serveRelayHttp } from '../../src/relay/http.js';
import { createLogger } from '../../src/log.js';
import { cli } from '../support/cli.js';
import { startRelay, waitAllSent } from '../support/relay.js';
import { useTestServices } from '../support/services.js';
import { waitFor } from '../support/wait.js';
import { parseMetrics, sumOf } from '../support/metrics.js';

describe('the relay over HTTP: health, readiness, metrics, status', () => {
  const { pool, freshOutbox } = useTestServices();

  it('answers /healthz, /readyz, /metrics in Prometheus format with bounded labels, and /api/status; not ready once stopped', async () => {
    const { schema, topic } = await freshOutbox(2);
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

      // The unsent gauges are read at most every 5 s: wait for a reading with the dead row.
      const scrape = async () => parseMetrics(await (await fetch(`${base}/metrics`)).text());
      await waitFor(async () => (await scrape()).some((m) => m.name === 'outbox_unsent_rows' && m.labels.state === 'dead' && m.value === 1), {
        timeoutMs: 15_000,
        message: 'the dead row in outbox_unsent_rows',
      });
      const response = await fetch(`${base}/metrics`);
      expect(response.headers.get('content-type')).toMatch(/^text\/plain; version=0.0.4/);
      const text = await response.text();
      for (const type of [
        'relay_batch_duration_seconds histogram',
        'relay_commit_to_publish_seconds histogram',
        'relay_published_records_total counter',
        'relay_batches_total counter',
        'relay_transaction_aborts_total counter',
        'relay_checkpoints_reconciled_total counter',
        'relay_shards_owned gauge',
        'outbox_unsent_rows gauge',
        'outbox_oldest_unsent_age_seconds gauge',
      ]) {
        expect(text).toContain(`# TYPE ${type}`);
      }
      const samples = parseMetrics(text);
      const one = (name: string, labels: Record<string, string> = {}) => sumOf(samples, name, labels);
      expect(one('relay_published_records_total', { topic })).toBe(120);
      expect(one('relay_batches_total')).toBeGreaterThanOrEqual(1);
      expect(one('relay_commit_to_publish_seconds_count')).toBe(120);
      expect(one('relay_batch_duration_seconds_count')).toBe(one('relay_batches_total'));
      expect(one('relay_shards_owned')).toBe(2);
      // A clean run: no transaction abandoned, nothing reconciled (counted in rows.test.ts and take-over.test.ts).
      expect(samples.filter((s) => s.name === 'relay_transaction_aborts_total')).toEqual([]);
      expect(one('relay_checkpoints_reconciled_total')).toBe(0);
      expect(one('outbox_unsent_rows', { topic, state: 'dead' })).toBe(1);
      expect(one('outbox_oldest_unsent_age_seconds', { topic })).toBeGreaterThanOrEqual(0);
      expect(samples.some((s) => s.name === 'process_cpu_user_seconds_total')).toBe(true);
      // Bounded labels only: never ids, keys or error texts.
      const labelNames = new Set(samples.filter((s) => /^(relay|outbox)_/.test(s.name)).flatMap((s) => Object.keys(s.labels)));
      expect([...labelNames].sort()).toEqual(['le', 'reason', 'state', 'topic'].filter((l) => labelNames.has(l)));

      // The schema taken back below what the relay needs (a restore of an older database, say): not ready, and why.
      const { rows: latest } = await pool.query(`delete from ${schema}.migrations where id = (select max(id) from ${schema}.migrations) returning id, name, applied_at`);
      const unready = await fetch(`${base}/readyz`);
      expect(unready.status).toBe(503);
      expect(await unready.json()).toMatchObject({ ready: false, reason: `schema ${schema} is at migration ${latest[0].id - 1}, this relay needs ${latest[0].id}: run outbox-relay migrate` });
      await pool.query(`insert into ${schema}.migrations (id, name, applied_at) values ($1, $2, $3)`, [latest[0].id, latest[0].name, latest[0].applied_at]);
      expect((await fetch(`${base}/readyz`)).status).toBe(200);

      const status = await (await fetch(`${base}/api/status`)).json();
      expect(status).toMatchObject({ verdict: 'STUCK', unsent: { dead: 1 }, relay: { shards: 2 } });
      expect((await fetch(`${base}/nope`)).status).toBe(404);
      expect((await fetch(`${base}/healthz`, { method: 'PUT' })).status).toBe(405);
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

  it('POST skip parks a row for good and its key moves on; POST replay and discard settle dead letters; each audited once, as the CLI would', async () => {
    const { schema, topic } = await freshOutbox(1);
    const relay = await startRelay(schema, { shards: 1 });
    const server = await serveRelayHttp(relay, { host: '127.0.0.1', port: 0 }, createLogger({ level: 'silent' }), { adminToken: 'tok' });
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const post = async (path: string, body: unknown) => {
      const response = await fetch(`${base}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: 'Bearer tok' }, body: JSON.stringify(body) });
      return { status: response.status, body: (await response.json()) as Record<string, unknown> };
    };
    try {
      const { rows } = await pool.query(
        `insert into ${schema}.messages (topic, key, payload, state, attempts, last_error) values ($1, 'k', 'poison', 'dead', 10, 'cannot be sent'), ($1, 'k', 'after', 'pending', 0, null) returning id::text`,
        [topic],
      );
      const [dead, after] = rows.map((r) => r.id as string);
      await pool.query(`insert into ${schema}.consumer_offsets (group_id, topic, partition, next_offset) values ('ledger', $1, 0, 0)`, [topic]);
      const { rows: letters } = await pool.query(
        `insert into ${schema}.dead_letters (group_id, topic, partition, "offset", error, attempts) values ('ledger', $1, 0, 0, 'boom', 3), ('ledger', $1, 0, 1, 'boom', 3) returning id::text`,
        [topic],
      );
      const [replayed, discarded] = letters.map((r) => r.id as string);

      const skipped = await post(`/api/rows/${dead}/skip`, { reason: 'poison: refunded by hand', actor: 'oncall' });
      expect(skipped).toEqual({ status: 200, body: expect.objectContaining({ command: 'skip', changed: 1, rows: [expect.objectContaining({ id: dead, state: 'dead', to: 'skipped' })] }) });
      // The row behind it on the same key goes; the skipped one never does.
      await waitFor(async () => (await pool.query(`select state from ${schema}.messages where id = $1`, [after])).rows[0].state === 'sent', { message: 'the next row of the key sent' });
      expect((await pool.query(`select state from ${schema}.messages where id = $1`, [dead])).rows[0].state).toBe('skipped');
      expect((await post(`/api/rows/${dead}/skip`, { reason: 'again' })).status).toBe(400);

      expect(await post(`/api/dead-letters/${replayed}/replay`, { group: 'ledger', reason: 'handler fixed' })).toMatchObject({ status: 200, body: { action: 'replay', changed: 1 } });
      expect(await post(`/api/dead-letters/${discarded}/discard`, { group: 'ledger', reason: 'refunded by hand' })).toMatchObject({ status: 200, body: { action: 'discard', changed: 1 } });
      const listed = (await (await fetch(`${base}/api/dead-letters?group=ledger&all=true`)).json()) as { group: string; deadLetters: Array<{ id: string; state: string }> };
      expect(listed.group).toBe('ledger');
      expect(Object.fromEntries(listed.deadLetters.map((l) => [l.id, l.state]))).toEqual({ [replayed!]: 'replay requested', [discarded!]: 'discarded' });
      expect((await post(`/api/dead-letters/${discarded}/replay`, { group: 'ledger', reason: 'r' })).status).toBe(400);

      const { rows: audit } = await pool.query(`select actor, command, row_ids::text[] as ids, reason from ${schema}.operator_actions order by id`);
      expect(audit).toEqual([
        { actor: 'oncall', command: 'skip', ids: [dead], reason: 'poison: refunded by hand' },
        { actor: 'http', command: 'dead-letters replay', ids: [replayed], reason: 'handler fixed' },
        { actor: 'http', command: 'dead-letters discard', ids: [discarded], reason: 'refunded by hand' },
      ]);
    } finally {
      await relay.stop();
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  });

  it('mutating routes need the bearer token (403 without one configured, 401 when wrong), validate their input, and audit like the CLI', async () => {
    const { schema, topic } = await freshOutbox(1);
    const relay = await startRelay(schema, { shards: 1 });
    const readOnly = await serveRelayHttp(relay, { host: '127.0.0.1', port: 0 }, createLogger({ level: 'silent' }));
    const server = await serveRelayHttp(relay, { host: '127.0.0.1', port: 0 }, createLogger({ level: 'silent' }), { adminToken: 's3cret-token' });
    const url = (s: typeof server) => `http://127.0.0.1:${(s.address() as AddressInfo).port}`;
    const post = (s: typeof server, path: string, body: unknown, token?: string) =>
      fetch(`${url(s)}${path}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
        body: typeof body === 'string' ? body : JSON.stringify(body),
      });
    try {
      const { rows } = await pool.query(
        `insert into ${schema}.messages (topic, key, payload, state, attempts, last_error, created_at) values ($1, 'k', 'x', 'dead', 10, 'was broken', now() - interval '1 hour') returning id::text`,
        [topic],
      );
      const dead = rows[0].id as string;
      const stuck = (await (await fetch(`${url(server)}/api/stuck?olderThan=10m&state=dead`)).json()) as { rows: unknown[] };
      expect(stuck.rows).toMatchObject([{ id: dead, state: 'dead', heldBack: expect.stringContaining('was broken') }]);
      expect(await (await fetch(`${url(server)}/api/rows/${dead}`)).json()).toMatchObject({ id: dead, state: 'dead', payload: { preview: 'x' } });
      expect((await fetch(`${url(server)}/api/rows/abc`)).status).toBe(400);
      expect((await fetch(`${url(server)}/api/rows/424242`)).status).toBe(404);
      expect((await fetch(`${url(server)}/api/stuck?olderThan=soon`)).status).toBe(400);

      expect((await post(readOnly, `/api/rows/${dead}/retry`, { reason: 'r' }, 's3cret-token')).status).toBe(403);
      expect((await post(server, `/api/rows/${dead}/retry`, { reason: 'r' })).status).toBe(401);
      expect((await post(server, `/api/rows/${dead}/retry`, { reason: 'r' }, 'wrong')).status).toBe(401);
      expect((await post(server, `/api/rows/${dead}/retry`, '{not json', 's3cret-token')).status).toBe(400);
      expect((await post(server, `/api/rows/${dead}/retry`, {}, 's3cret-token')).status).toBe(400); // no reason
      expect((await post(server, `/api/rows/${dead}/retry`, { reason: 'x'.repeat(20_000) }, 's3cret-token')).status).toBe(413);
      expect((await post(server, `/api/rows/424242/retry`, { reason: 'r' }, 's3cret-token')).status).toBe(404);
      expect((await pool.query(`select state from ${schema}.messages where id = $1`, [dead])).rows[0].state).toBe('dead');

      const retried = await post(server, `/api/rows/${dead}/retry`, { reason: 'topic fixed', actor: 'dashboard-user' }, 's3cret-token');
      expect(retried.status).toBe(200);
      expect(await retried.json()).toMatchObject({ command: 'retry', changed: 1, rows: [{ id: dead, state: 'dead', to: 'pending' }] });
      await waitFor(async () => (await pool.query(`select state from ${schema}.messages where id = $1`, [dead])).rows[0].state === 'sent');
      const { rows: audit } = await pool.query(`select actor, command, row_ids::text[] as ids, reason from ${schema}.operator_actions`);
      expect(audit).toEqual([{ actor: 'dashboard-user', command: 'retry', ids: [dead], reason: 'topic fixed' }]);
    } finally {
      await relay.stop();
      for (const s of [server, readOnly]) {
        s.closeAllConnections();
        await new Promise((resolve) => s.close(resolve));
      }
    }
  });
});
