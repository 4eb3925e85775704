import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type BrowserContext } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { enqueue } from '../../src/outbox/enqueue.js';
import { serveRelayHttp, type RelayHttpOptions } from '../../src/relay/http.js';
import type { Relay } from '../../src/relay/relay.js';
import { createLogger } from '../../src/log.js';
import { effectHandler } from '../support/consumer.js';
import { freshSchema, inTransaction } from '../support/db.js';
import { missingTopic } from '../support/kafka.js';
import { startRelay } from '../support/relay.js';
import { useTestServices } from '../support/services.js';
import { waitFor, within } from '../support/wait.js';

/** Debian's Chromium, installed by scripts/ensure.sh; CHROMIUM_PATH overrides. */
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
/** Where the test leaves its screenshot. */
const OUTPUT = join(process.cwd(), 'test-results', 'dashboard');
const TOKEN = 'dashboard-test-token';

/** A GET of `path` exactly as written (fetch would normalise it), with a chosen Host header. */
function rawGet(base: string, path: string, host?: string): Promise<{ status: number }> {
  const url = new URL(base);
  return new Promise((resolve, reject) => {
    const req = request({ host: url.hostname, port: url.port, path, headers: host ? { host } : {}, agent: false }, (res) => {
      res.resume();
      resolve({ status: res.statusCode ?? 0 });
    });
    req.setTimeout(10_000, () => req.destroy(new Error(`GET ${path} got no answer within 10 s`)));
    req.on('error', reject);
    req.end();
  });
}

describe('the dashboard in a real browser', () => {
  const { pool, admin, freshEffects, startConsumer } = useTestServices({ poolSize: 8 });
  let browser: BrowserContext;
  let profile: string;

  beforeAll(async () => {
    profile = await mkdtemp(join(tmpdir(), 'outbox-relay-chromium-'));
    browser = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      viewport: { width: 1280, height: 800 },
      args: [
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        '--disable-dev-shm-usage',
      ],
    });
  });
  afterAll(async () => {
    await browser?.close();
    await rm(profile, { recursive: true, force: true });
  });

  /** The relay's HTTP server and a page; `close()` closes both. */
  async function openDashboard(relay: Relay, options: RelayHttpOptions = {}) {
    const server = await serveRelayHttp(relay, { host: '127.0.0.1', port: 0 }, createLogger({ level: 'silent' }), options);
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const page = await within(20_000, 'opening a page', browser.newPage());
    const errors: string[] = [];
    page.on('pageerror', (err) => errors.push(err.message));
    page.on('console', (m) => m.type() === 'error' && errors.push(m.text()));
    return {
      base,
      page,
      errors,
      async close() {
        await within(10_000, 'closing the page', page.close());
        server.closeAllConnections();
        await within(10_000, 'closing the HTTP server', new Promise((resolve) => server.close(resolve)));
      },
    };
  }

  it('draws throughput and backlog from real traffic, lists a row the relay killed, and Retry with the token gets it sent, followed in the page', async () => {
    const { schema, topic } = await freshEffects(3);
    const relay = await startRelay(schema, { shards: 2, maxAttempts: 2, rowBackoff: { minMs: 50, maxMs: 100 } });
    const server = await serveRelayHttp(relay, { host: '127.0.0.1', port: 0 }, createLogger({ level: 'silent' }), { adminToken: TOKEN });
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    // Real traffic while the page is open: orders of a few customers, one of them hot.
    let writing = true;
    const writer = (async () => {
      for (let n = 0; writing; n++) {
        await inTransaction(pool, (client) =>
          enqueue(client, Array.from({ length: 25 }, (_, i) => ({ topic, key: i % 3 === 0 ? 'customer-hot' : `customer-${(n * 25 + i) % 17}`, payload: { n, i } })), { schema }),
        );
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    })();
    // The finance consumer, which cannot apply one record: it becomes a dead letter.
    const apply = effectHandler(schema);
    await startConsumer({
      schema,
      topics: [topic],
      maxAttempts: 2,
      retryMinDelayMs: 10,
      retryMaxDelayMs: 20,
      handler: async (record, tx) => {
        if (record.value?.toString().includes('unpayable')) throw new Error('account closed');
        await apply(record, tx);
      },
    });
    const page = await within(20_000, 'opening a page', browser.newPage());
    const errors: string[] = [];
    page.on('pageerror', (err) => errors.push(err.message));
    page.on('console', (m) => m.type() === 'error' && errors.push(m.text()));
    try {
      // A poison row: for a topic nobody created yet, so the relay fails it twice and it goes
      // dead, holding its key back.
      const poisonTopic = missingTopic();
      const [deadId] = await inTransaction(pool, (client) => enqueue(client, [{ topic: poisonTopic, key: 'customer-poison', payload: { poison: true } }], { schema }));
      await inTransaction(pool, (client) => enqueue(client, [{ topic, key: 'customer-9', payload: { invoice: 'unpayable' } }], { schema }));

      await page.goto(base);
      await page.waitForSelector('body[data-loaded="true"]', { timeout: 20_000 });
      // The charts draw with non-zero data: records published per second, and a backlog.
      await waitFor(
        async () => Number(await page.getAttribute('#chart-throughput', 'data-max')) > 0 && Number(await page.getAttribute('#chart-throughput', 'data-points')) > 1,
        { timeoutMs: 30_000, message: 'the throughput chart draws a line of records published' },
      );
      expect(Number(await page.getAttribute('#rate', 'data-value'))).toBeGreaterThan(0);
      await waitFor(async () => Number(await page.getAttribute('#chart-backlog', 'data-max')) > 0, { timeoutMs: 30_000, message: 'the backlog chart shows the dead row' });
      await waitFor(async () => (await page.locator('#partitions .bar').count()) > 0, { timeoutMs: 20_000, message: 'the partition histogram' });
      expect(await page.textContent('#verdict')).toBe('STUCK');
      await page.waitForSelector('#lag tbody tr[data-group]', { timeout: 20_000 });
      const letter = page.locator('#dead-letters tbody tr[data-id]');
      await letter.waitFor({ timeout: 30_000 });
      expect(await letter.textContent()).toContain('account closed');
      expect(await letter.locator('button[data-action="replay"]').count()).toBe(1);

      // The dead row is listed, with its error; Retry without the token is refused in the page.
      const row = page.locator(`#stuck tr[data-id="${deadId}"]`);
      await row.waitFor({ timeout: 20_000 });
      expect(await row.getAttribute('data-state')).toBe('dead');
      expect(await row.textContent()).toContain(`unknown topic ${poisonTopic}`);
      await row.locator('button[data-action="retry"]').click();
      await waitFor(async () => /admin token/.test((await page.textContent('#message')) ?? ''), { timeoutMs: 5_000 });
      expect((await pool.query(`select state from ${schema}.messages where id = $1`, [deadId])).rows[0].state).toBe('dead');

      // The operator creates the topic; with the token and a reason, Retry sends the row,
      // audited as the dashboard's, and the page follows it until it is sent.
      await admin.createTopic({ topic: poisonTopic, num_partitions: 1, replication_factor: 1 });
      await page.fill('#token', TOKEN);
      await page.fill('#action-reason', 'poison fixed upstream');
      await mkdir(OUTPUT, { recursive: true });
      await page.screenshot({ path: join(OUTPUT, 'dashboard.png'), fullPage: true });
      await row.locator('button[data-action="retry"]').click();
      await waitFor(async () => /retry row \d+: done/.test((await page.textContent('#message')) ?? ''), { timeoutMs: 10_000, message: 'the retry confirmed in the page' });
      const repaired = page.locator(`#repairs tr[data-id="${deadId}"][data-state="sent"]`);
      await repaired.waitFor({ timeout: 30_000 });
      expect(await repaired.textContent()).toMatch(/retry.*sent.*partition 0, offset \d+/);
      expect((await pool.query(`select state from ${schema}.messages where id = $1`, [deadId])).rows[0].state).toBe('sent');
      await row.waitFor({ state: 'detached', timeout: 20_000 });
      await page.screenshot({ path: join(OUTPUT, 'dashboard-repaired.png'), fullPage: true });
      const audit = await pool.query(`select actor, command, reason from ${schema}.operator_actions`);
      expect(audit.rows).toEqual([{ actor: 'dashboard', command: 'retry', reason: 'poison fixed upstream' }]);
      // The token is kept in the tab, not asked again after a reload.
      await page.reload();
      expect(await page.inputValue('#token')).toBe(TOKEN);
      expect(errors).toEqual([]);
    } finally {
      writing = false;
      await writer;
      await page.close();
      server.closeAllConnections();
      await within(10_000, 'closing the HTTP server', new Promise((resolve) => server.close(resolve)));
      await relay.stop();
    }
  });

  it('the page comes from the package with a strict content policy, and needs nothing from outside', async () => {
    const schema = await freshSchema(pool);
    const relay = await within(30_000, 'starting the relay', startRelay(schema, { shards: 1 }));
    const dashboard = await openDashboard(relay);
    const { base, page } = dashboard;
    const outside: string[] = [];
    page.on('request', (r) => !r.url().startsWith(base) && outside.push(r.url()));
    try {
      const response = await fetch(base);
      expect(response.headers.get('content-type')).toMatch(/^text\/html/);
      expect(response.headers.get('content-security-policy')).toContain("default-src 'none'");
      expect(await response.text()).toContain('<script type="module" src="/dashboard/app.js">');
      const script = await fetch(`${base}/dashboard/app.js`);
      expect(script.headers.get('content-type')).toMatch(/^text\/javascript/);
      await script.text();
      // Only the shipped files, whatever the path says; only loopback host names.
      for (const path of ['/dashboard/../package.json', '/dashboard/%2e%2e/package.json', '/dashboard/app.js/../../package.json', '/../../etc/passwd']) {
        expect({ path, status: (await rawGet(base, path)).status }).toEqual({ path, status: 404 });
      }
      expect((await rawGet(base, '/api/status', 'attacker.example')).status).toBe(421);
      expect((await rawGet(base, '/', 'localhost')).status).toBe(200);
      await page.goto(base, { timeout: 20_000 });
      await page.waitForSelector('body[data-loaded="true"]', { timeout: 20_000 });
      expect(await page.textContent('#verdict')).toBe('OK');
      expect(outside).toEqual([]);
      // Without --playground there is no "Try it" panel, and nothing runs a try.
      expect(await page.isHidden('#try')).toBe(true);
      const refused = await fetch(`${base}/api/try`, { method: 'POST', headers: { authorization: 'Bearer x' }, body: '{}' });
      expect(refused.status).toBe(403);
      expect(await (await fetch(`${base}/api/try`)).json()).toMatchObject({ enabled: false });
    } finally {
      await dashboard.close();
      await within(30_000, 'stopping the relay', relay.stop());
    }
  });

  it('with --playground, the Try it panel runs a preset through the real relay: a card clicked, Send, the histogram drawn and the history one bar longer per try', { timeout: 180_000 }, async () => {
    const schema = await freshSchema(pool);
    const relay = await within(30_000, 'starting the relay', startRelay(schema, { shards: 1 }));
    const dashboard = await openDashboard(relay, { adminToken: TOKEN, playground: true });
    const { base, page, errors } = dashboard;
    const history = () => page.locator('#try-history .bar').count();
    try {
      await page.goto(base, { timeout: 20_000 });
      await page.waitForSelector('#try:not([hidden])', { timeout: 20_000 });
      // Without the token the page says so, and nothing is sent.
      await page.click('#try-send');
      await waitFor(async () => /admin token/.test((await page.textContent('#try-message')) ?? ''), { timeoutMs: 5_000 });
      expect(await history()).toBe(0);

      await page.fill('#token', TOKEN);
      await page.click('#try .preset[data-preset="throughput"]');
      expect(await page.getAttribute('#try .preset[data-preset="throughput"]', 'aria-pressed')).toBe('true');
      await page.fill('#try-events', '1000');
      await page.click('#try-send');
      await waitFor(async () => (await history()) === 1, { timeoutMs: 90_000, message: 'the first try in the history' });
      const counts = await page.locator('#try-histogram .bar').evaluateAll((bars) => bars.map((b) => Number(b.getAttribute('data-n'))));
      expect(counts).toHaveLength(6);
      expect(counts.reduce((a, b) => a + b, 0)).toBe(1000);
      expect(await page.locator('#try-samples tbody tr').count()).toBe(10);
      expect(await page.textContent('#try-figures')).toContain('exactly onceyes');
      expect(await page.getAttribute('#try-skew', 'data-skewed')).toBe('false');

      // The hot-key card: two keys, at most two partitions, a skew the page calls uneven.
      await page.click('#try .preset >> text=hot key');
      expect(await page.inputValue('#try-keys')).toBe('2');
      await page.click('#try-send');
      await waitFor(async () => (await history()) === 2, { timeoutMs: 90_000, message: 'the second try in the history' });
      expect(await page.getAttribute('#try-skew', 'data-skewed')).toBe('true');
      const hot = await page.locator('#try-histogram .bar').evaluateAll((bars) => bars.filter((b) => Number(b.getAttribute('data-n')) > 0).length);
      expect(hot).toBeLessThanOrEqual(2);
      expect(await page.textContent('#try-history')).toMatch(/#1 throughput.*#2 reliable, 2 keys/s);
      await mkdir(OUTPUT, { recursive: true });
      await page.locator('#try').screenshot({ path: join(OUTPUT, 'try-panel.png') });

      // A server error is a message in the panel, not a broken page.
      await page.fill('#try-events', '0');
      await page.click('#try-send');
      await waitFor(async () => /events must be an integer/.test((await page.textContent('#try-message')) ?? ''), { timeoutMs: 10_000 });
      expect(await history()).toBe(2);
      expect(errors.filter((e) => !/status of 400/.test(e))).toEqual([]);
    } finally {
      await dashboard.close();
      await within(30_000, 'stopping the relay', relay.stop());
    }
  });
});
