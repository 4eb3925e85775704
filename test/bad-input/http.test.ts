/**
 * The bad-input corpus (test/bad-input/), the relay over HTTP: what this entry point must refuse, each
 * case checking (a) the refusal is typed (an OutboxError code, a SQLSTATE and constraint, a
 * CLI exit code 2 with its message, an HTTP status with a JSON error) or the row/record is
 * parked with its reason, and (b) nothing is lost: the refused write changed nothing, and
 * good input through the same entry point still flows, end to end.
 */
import { request } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/log.js';
import { serveRelayHttp } from '../../src/relay/http.js';
import type { Relay } from '../../src/relay/relay.js';
import { freshSchema } from '../support/db.js';
import { freshTopic } from '../support/kafka.js';
import { startRelay, waitAllSent } from '../support/relay.js';
import { useTestServices } from '../support/services.js';
import { waitFor } from '../support/wait.js';
import { badInputChecks, type RepairFixture as Fixture } from '../support/bad-input.js';

const services = useTestServices({ poolSize: 8 });
const { pool, admin } = services;
const { count, snapshot, repairFixture, expectRepairedInOrder } = badInputChecks(services);

// ---------------------------------------------------------------------------------------
// HTTP (the relay's --http server)
// ---------------------------------------------------------------------------------------

interface HttpCase {
  name: string;
  method: string;
  path: (f: Fixture) => string;
  body?: string;
  /** The bearer token sent; `authorization` overrides the header as a whole. */
  token?: string;
  authorization?: string;
  host?: string;
  server?: 'admin' | 'read-only';
  status: number;
  error: RegExp;
}

const TOKEN = 'bad-input-token';
const reason = JSON.stringify({ reason: 'r' });

const HTTP_CASES: HttpCase[] = [
  { name: 'GET of a non-numeric row id', method: 'GET', path: () => '/api/rows/abc', status: 400, error: /row id must be a positive decimal id/ },
  { name: 'GET of a row id beyond bigint', method: 'GET', path: () => '/api/rows/99999999999999999999', status: 400, error: /row id must be a positive decimal id/ },
  { name: 'GET of a row that does not exist', method: 'GET', path: () => '/api/rows/424242424', status: 404, error: /no outbox row 424242424/ },
  { name: 'GET /api/stuck with a bad duration', method: 'GET', path: () => '/api/stuck?olderThan=5x', status: 400, error: /olderThan must be a duration/ },
  { name: 'GET /api/stuck with limit 0', method: 'GET', path: () => '/api/stuck?limit=0', status: 400, error: /limit must be an integer in 1\.\.10000/ },
  { name: 'GET /api/stuck with state sent', method: 'GET', path: () => '/api/stuck?state=sent', status: 400, error: /state must be pending, failed or dead/ },
  { name: 'GET /api/stuck of a topic no row has', method: 'GET', path: () => '/api/stuck?topic=no-such-topic', status: 404, error: /no outbox row has topic "no-such-topic"/ },
  { name: 'GET /api/dead-letters without a group', method: 'GET', path: () => '/api/dead-letters', status: 400, error: /group is required/ },
  { name: 'GET /api/dead-letters of an unknown group', method: 'GET', path: () => '/api/dead-letters?group=no-such-group', status: 404, error: /no consumer group "no-such-group"/ },
  { name: 'GET /api/dead-letters of a topic the group has nothing of', method: 'GET', path: () => '/api/dead-letters?group=ledger&topic=no-such-topic', status: 404, error: /consumer group "ledger" has no offsets and no dead letters of topic "no-such-topic"/ },
  { name: 'GET of an unknown route', method: 'GET', path: () => '/api/nothing-here', status: 404, error: /no route \/api\/nothing-here/ },
  { name: 'DELETE of a row', method: 'DELETE', path: (f) => `/api/rows/${f.dead}`, status: 405, error: /GET, or POST/ },
  { name: 'a request naming a host that is not loopback (DNS rebinding)', method: 'GET', path: () => '/api/status', host: 'evil.example:9464', status: 421, error: /only requests for a loopback host name/ },
  { name: 'POST retry on a server without an admin token', method: 'POST', path: (f) => `/api/rows/${f.dead}/retry`, body: reason, token: TOKEN, server: 'read-only', status: 403, error: /no admin token is configured/ },
  { name: 'POST retry without a bearer token', method: 'POST', path: (f) => `/api/rows/${f.dead}/retry`, body: reason, status: 401, error: /wrong or missing bearer token/ },
  { name: 'POST retry with a wrong bearer token', method: 'POST', path: (f) => `/api/rows/${f.dead}/retry`, body: reason, token: 'guess', status: 401, error: /wrong or missing bearer token/ },
  { name: 'POST retry with Basic credentials', method: 'POST', path: (f) => `/api/rows/${f.dead}/retry`, body: reason, authorization: `Basic ${Buffer.from(`admin:${TOKEN}`).toString('base64')}`, status: 401, error: /wrong or missing bearer token/ },
  { name: 'POST retry with a body that is not JSON', method: 'POST', path: (f) => `/api/rows/${f.dead}/retry`, body: '{reason: r', token: TOKEN, status: 400, error: /request body is not JSON/ },
  { name: 'POST retry with a JSON array body', method: 'POST', path: (f) => `/api/rows/${f.dead}/retry`, body: '["r"]', token: TOKEN, status: 400, error: /request body must be a JSON object/ },
  { name: 'POST retry with an oversized body', method: 'POST', path: (f) => `/api/rows/${f.dead}/retry`, body: JSON.stringify({ reason: 'x'.repeat(20_000) }), token: TOKEN, status: 413, error: /request body over 16384 bytes/ },
  { name: 'POST retry without a reason', method: 'POST', path: (f) => `/api/rows/${f.dead}/retry`, body: '{}', token: TOKEN, status: 400, error: /reason must be a string of 1-2000 characters/ },
  { name: 'POST retry with a numeric reason', method: 'POST', path: (f) => `/api/rows/${f.dead}/retry`, body: '{"reason": 5}', token: TOKEN, status: 400, error: /reason must be a string/ },
  { name: 'POST retry of a non-numeric row id', method: 'POST', path: () => '/api/rows/1;drop/retry', body: reason, token: TOKEN, status: 400, error: /row id must be a positive decimal id/ },
  { name: 'POST retry of a sent row', method: 'POST', path: (f) => `/api/rows/${f.sent}/retry`, body: reason, token: TOKEN, status: 400, error: /is sent: retry applies to failed, dead rows; nothing changed/ },
  { name: 'POST retry of a row that does not exist', method: 'POST', path: () => '/api/rows/424242424/retry', body: reason, token: TOKEN, status: 404, error: /no outbox row with id 424242424/ },
  { name: 'POST of an unknown action', method: 'POST', path: (f) => `/api/rows/${f.dead}/publish-now`, body: reason, token: TOKEN, status: 404, error: /no route POST/ },
  { name: 'POST replay of a dead letter without a group', method: 'POST', path: (f) => `/api/dead-letters/${f.letter}/replay`, body: reason, token: TOKEN, status: 400, error: /group must be a string/ },
  { name: 'POST replay of a dead letter of an unknown group', method: 'POST', path: (f) => `/api/dead-letters/${f.letter}/replay`, body: JSON.stringify({ reason: 'r', group: 'no-such-group' }), token: TOKEN, status: 404, error: /group no-such-group has no dead letter/ },
];

function call(port: number, c: { method: string; path: string; body?: string | undefined; headers?: Record<string, string> }): Promise<{ status: number; type: string; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method: c.method, path: c.path, headers: { 'content-type': 'application/json', ...c.headers } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('end', () => resolve({ status: res.statusCode!, type: String(res.headers['content-type']), body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(c.body);
  });
}

describe('the relay over HTTP: bad requests get their status and a JSON error, and change nothing', () => {
  let schema: string;
  let f: Fixture;
  let relay: Relay;
  let ports: Record<'admin' | 'read-only', number>;
  let before: Awaited<ReturnType<typeof snapshot>>;
  const servers: Array<Awaited<ReturnType<typeof serveRelayHttp>>> = [];
  beforeAll(async () => {
    schema = await freshSchema(pool);
    f = await repairFixture(schema, await freshTopic(admin, 1));
    relay = await startRelay(schema, { shards: 1 });
    const logger = createLogger({ level: 'silent' });
    servers.push(await serveRelayHttp(relay, { host: '127.0.0.1', port: 0 }, logger, { adminToken: TOKEN }));
    servers.push(await serveRelayHttp(relay, { host: '127.0.0.1', port: 0 }, logger));
    ports = { admin: (servers[0]!.address() as AddressInfo).port, 'read-only': (servers[1]!.address() as AddressInfo).port };
    // The relay has met the row held behind the dead one: its state no longer moves.
    await waitFor(async () => (await count(`${schema}.messages where held`)) === 1, { message: 'row held behind the dead one' });
    before = await snapshot(schema);
  });
  afterAll(async () => {
    await relay?.stop();
    for (const s of servers) {
      s.closeAllConnections();
      await new Promise((resolve) => s.close(resolve));
    }
  });

  it.each(HTTP_CASES)('$name answers $status with a JSON error', async (c) => {
    const headers: Record<string, string> = {};
    if (c.token) headers.authorization = `Bearer ${c.token}`;
    if (c.authorization) headers.authorization = c.authorization;
    if (c.host) headers.host = c.host;
    const response = await call(ports[c.server ?? 'admin'], { method: c.method, path: c.path(f), body: c.body, headers });
    expect({ status: response.status, type: response.type }).toEqual({ status: c.status, type: 'application/json' });
    expect((JSON.parse(response.body) as { error: string }).error).toMatch(c.error);
    expect(await snapshot(schema)).toEqual(before);
  });

  it('after the refusals, an authorised retry is audited and the relay publishes the row, then the row held behind it', async () => {
    await pool.query(`update ${schema}.messages set topic = $2 where id = $1`, [f.dead, f.topic]);
    const response = await call(ports.admin, { method: 'POST', path: `/api/rows/${f.dead}/retry`, body: JSON.stringify({ reason: 'topic created', actor: 'dashboard-user' }), headers: { authorization: `Bearer ${TOKEN}` } });
    expect(response.status).toBe(200);
    expect(JSON.parse(response.body)).toMatchObject({ command: 'retry', changed: 1, rows: [{ id: f.dead, state: 'dead', to: 'pending' }] });
    await waitAllSent(pool, schema, 30_000);
    await expectRepairedInOrder(f.topic, f);
    const { rows } = await pool.query(`select actor, command, row_ids::text[] as ids from ${schema}.operator_actions`);
    expect(rows).toEqual([{ actor: 'dashboard-user', command: 'retry', ids: [f.dead] }]);
  });
});
