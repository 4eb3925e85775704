import { createHash, timingSafeEqual } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { OutboxError } from '../errors.js';
import type { Logger } from '../log.js';
import { collectStuck, listDeadLetters, parseDuration, readRow } from '../ops/inspect.js';
import { repairRows, requestDeadLetters } from '../ops/repair.js';
import { collectStatus } from '../ops/status.js';
import { PRODUCER_PRESETS } from '../kafka/config.js';
import { Playground, PLAYGROUND_MAX_EVENTS } from './playground.js';
import type { Relay } from './relay.js';

/** The relay's HTTP port unless told otherwise. */
export const DEFAULT_HTTP_PORT = 9464;

export interface HttpAddress {
  host: string;
  port: number;
}

export interface RelayHttpOptions {
  /**
   * Bearer token the mutating routes require (`--admin-token`, env OUTBOX_ADMIN_TOKEN).
   * Without one they answer 403: read-only.
   */
  adminToken?: string | undefined;
  /** Serve the dashboard's "Try it" panel (`POST /api/try`, with the admin token). Default off. */
  playground?: boolean;
}

/** Largest request body accepted, in bytes. */
const MAX_BODY_BYTES = 16 * 1024;

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

async function readJson(req: IncomingMessage): Promise<Record<string, unknown>> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY_BYTES) throw new HttpError(413, `request body over ${MAX_BODY_BYTES} bytes`);
    chunks.push(chunk);
  }
  if (size === 0) return {};
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch {
    throw new HttpError(400, 'request body is not JSON');
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new HttpError(400, 'request body must be a JSON object');
  return parsed as Record<string, unknown>;
}

function textField(body: Record<string, unknown>, name: string, max: number, required: boolean): string | undefined {
  const value = body[name];
  if (value === undefined && !required) return undefined;
  if (typeof value !== 'string' || value.length === 0 || value.length > max || value.includes('\u0000')) {
    throw new HttpError(400, `${name} must be a string of 1-${max} characters`);
  }
  return value;
}

function authorise(req: IncomingMessage, token: string | undefined): void {
  if (!token) throw new HttpError(403, 'no admin token is configured (--admin-token / OUTBOX_ADMIN_TOKEN): mutating routes are off');
  const given = /^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1] ?? '';
  const a = createHash('sha256').update(given).digest();
  const b = createHash('sha256').update(token).digest();
  if (!timingSafeEqual(a, b)) throw new HttpError(401, 'wrong or missing bearer token');
}

const ID = /^\d{1,18}$/;

/** How often the dashboard's history is sampled (see RelayActivity). */
const SAMPLE_MS = 2_000;

/** The dashboard's files, shipped in the package beside `dist/` (and `src/`): no build step, no CDN. */
const DASHBOARD_FILES: Record<string, string> = {
  '/': 'index.html',
  '/dashboard/app.js': 'app.js',
  '/dashboard/dom.js': 'dom.js',
  '/dashboard/try.js': 'try.js',
  '/dashboard/style.css': 'style.css',
};
const CONTENT_TYPES: Record<string, string> = {
  html: 'text/html; charset=utf-8',
  js: 'text/javascript; charset=utf-8',
  css: 'text/css; charset=utf-8',
};
/** The page runs only its own script and talks only to this server. */
const DASHBOARD_HEADERS = {
  'content-security-policy': "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
};

/** The dashboard's files, or why they cannot be served (then `/` answers 503 and the rest of the server runs). */
async function loadDashboard(): Promise<Map<string, { body: Buffer; type: string }> | Error> {
  const dir = new URL('../../dashboard/', import.meta.url);
  const files = new Map<string, { body: Buffer; type: string }>();
  try {
    for (const [route, name] of Object.entries(DASHBOARD_FILES)) {
      files.set(route, { body: await readFile(new URL(name, dir)), type: CONTENT_TYPES[name.split('.').pop()!]! });
    }
  } catch (err) {
    return err as Error;
  }
  return files;
}

/** How long one `/api/status` answer serves every caller: open dashboards poll it. */
const STATUS_CACHE_MS = 2_000;

const LOOPBACK_HOST = /^(localhost|127(?:\.\d{1,3}){3}|\[::1\])(?::\d{1,5})?$/i;

/**
 * A server bound to loopback answers only requests that name a loopback host, so a web
 * page whose name was re-pointed at 127.0.0.1 (DNS rebinding) cannot read the API.
 */
function loopbackOnly(host: string): boolean {
  return host === '127.0.0.1' || host === '::1' || host === 'localhost' || host.startsWith('127.');
}

/**
 * `--http` values: `off`, a port (on loopback), or `host:port` (`[::1]:9464` for IPv6).
 * Loopback unless an address is given.
 */
export function parseHttpAddress(raw: string): HttpAddress | 'off' {
  if (raw === 'off') return 'off';
  const match = /^(?:(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):)?(\d{1,5})$/.exec(raw);
  const port = match ? Number(match[2]) : NaN;
  if (!match || port > 65_535) {
    throw new OutboxError('INVALID_ARGUMENT', `--http must be off, a port, or host:port (e.g. 127.0.0.1:${DEFAULT_HTTP_PORT}), got ${JSON.stringify(raw.slice(0, 60))}`);
  }
  return { host: match[1]?.replace(/^\[|\]$/g, '') ?? '127.0.0.1', port };
}

function send(res: ServerResponse, status: number, body: unknown, contentType = 'application/json'): void {
  const text = typeof body === 'string' ? body : JSON.stringify(body);
  res.writeHead(status, { 'content-type': contentType, 'cache-control': 'no-store', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

/**
 * The relay's HTTP surface: `GET /` the dashboard, `GET /healthz` (the process answers),
 * `GET /readyz` (database and brokers answer, the relay runs and its group serves the
 * outbox: 200, or 503 with the reason), `GET /metrics` (Prometheus text), `GET /api/status`,
 * `/api/stuck`, `/api/rows/:id`, `/api/dead-letters?group=G` (the CLI's JSON),
 * `/api/activity` (the dashboard's history); the POST routes repair, with the admin token.
 */
export async function serveRelayHttp(
  relay: Relay,
  address: HttpAddress,
  logger: Logger = relay.options.logger,
  options: RelayHttpOptions = {},
): Promise<Server> {
  const q = relay.options.q;
  const dashboard = await loadDashboard();
  if (dashboard instanceof Error) logger.error({ err: dashboard }, "http: the dashboard's files cannot be read; GET / answers 503, the other routes are served");
  const loopback = loopbackOnly(address.host);
  let status: { at: number | undefined; value: ReturnType<typeof collectStatus> } | undefined;
  const pool = () => relay.database ?? (() => { throw new HttpError(503, 'the relay is not started'); })();
  const playground = options.playground ? new Playground(relay) : undefined;
  const mutate = async (req: IncomingMessage, path: string): Promise<unknown> => {
    authorise(req, options.adminToken);
    const body = await readJson(req);
    if (path === '/api/try') {
      if (!playground) throw new HttpError(404, 'the playground is off: start the relay with --playground');
      return playground.run(body);
    }
    const reason = textField(body, 'reason', 2000, true)!;
    const actor = textField(body, 'actor', 200, false) ?? 'http';
    const row = /^\/api\/rows\/([^/]+)\/(retry|skip)$/.exec(path);
    if (row) {
      if (!ID.test(row[1]!)) throw new HttpError(400, 'row id must be a positive decimal id');
      return repairRows(pool(), q, { command: row[2] as 'retry' | 'skip', ids: [BigInt(row[1]!).toString()], reason, actor, dryRun: body.dryRun === true });
    }
    const letter = /^\/api\/dead-letters\/([^/]+)\/(replay|discard)$/.exec(path);
    if (letter) {
      if (!ID.test(letter[1]!)) throw new HttpError(400, 'dead-letter id must be a positive decimal id');
      const group = textField(body, 'group', 255, true)!;
      return requestDeadLetters(pool(), q, { action: letter[2] as 'replay' | 'discard', group, ids: [BigInt(letter[1]!).toString()], reason, actor, dryRun: body.dryRun === true });
    }
    throw new HttpError(404, `no route POST ${path}`);
  };
  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    if (loopback && !LOOPBACK_HOST.test(req.headers.host ?? '')) throw new HttpError(421, 'this server answers only requests for a loopback host name (localhost, 127.0.0.1, [::1])');
    const url = new URL(req.url ?? '/', 'http://relay');
    const path = url.pathname;
    if (req.method === 'POST') return send(res, 200, await mutate(req, path));
    if (req.method !== 'GET' && req.method !== 'HEAD') return send(res, 405, { error: 'GET, or POST for the mutating routes' });
    if (dashboard instanceof Error) {
      if (Object.hasOwn(DASHBOARD_FILES, path)) return send(res, 503, { error: `the dashboard's files cannot be read: ${dashboard.message}` });
    }
    const file = dashboard instanceof Error ? undefined : dashboard.get(path);
    if (file) {
      res.writeHead(200, { 'content-type': file.type, 'content-length': file.body.length, 'cache-control': 'no-cache', ...DASHBOARD_HEADERS });
      return res.end(req.method === 'HEAD' ? undefined : file.body);
    }
    const rowRead = /^\/api\/rows\/([^/]+)$/.exec(path);
    if (rowRead) {
      if (!ID.test(rowRead[1]!)) throw new HttpError(400, 'row id must be a positive decimal id');
      const found = await readRow(pool(), q, BigInt(rowRead[1]!).toString());
      if (!found) throw new HttpError(404, `no outbox row ${rowRead[1]}`);
      return send(res, 200, found);
    }
    switch (path) {
      case '/api/stuck': {
        const given = (name: string) => url.searchParams.get(name) || null;
        const state = given('state');
        if (state !== null && !['pending', 'failed', 'dead'].includes(state)) throw new HttpError(400, 'state must be pending, failed or dead');
        const limit = given('limit') === null ? 100 : Number(given('limit'));
        if (!Number.isInteger(limit) || limit < 1 || limit > 10_000) throw new HttpError(400, 'limit must be an integer in 1..10000');
        let olderThanMs: number;
        try {
          olderThanMs = parseDuration(given('olderThan') ?? '5m', 'olderThan');
        } catch (err) {
          throw new HttpError(400, (err as Error).message);
        }
        return send(res, 200, { olderThanMs, rows: await collectStuck(pool(), q, { olderThanMs, state, topic: given('topic'), key: given('key'), limit }) });
      }
      case '/api/activity':
        return send(res, 200, relay.activity.snapshot());
      case '/api/try':
        return send(res, 200, { enabled: playground !== undefined, presets: Object.keys(PRODUCER_PRESETS), maxEvents: PLAYGROUND_MAX_EVENTS });
      case '/api/dead-letters': {
        const group = url.searchParams.get('group');
        if (!group || group.length > 255) throw new HttpError(400, 'group is required (a consumer group id)');
        const limit = url.searchParams.get('limit') ? Number(url.searchParams.get('limit')) : 100;
        if (!Number.isInteger(limit) || limit < 1 || limit > 10_000) throw new HttpError(400, 'limit must be an integer in 1..10000');
        const topic = url.searchParams.get('topic') || null;
        return send(res, 200, { group, deadLetters: await listDeadLetters(pool(), q, { group, topic, all: url.searchParams.get('all') === 'true', limit }) });
      }
      case '/healthz':
        return send(res, 200, { status: 'ok' });
      case '/readyz': {
        const readiness = await relay.readiness();
        return send(res, readiness.ready ? 200 : 503, readiness);
      }
      case '/metrics':
        return send(res, 200, await relay.metrics.metrics(), relay.metrics.contentType);
      case '/api/status': {
        // One reading at a time; an answer serves everyone for STATUS_CACHE_MS after it came.
        if (!status || (status.at !== undefined && Date.now() - status.at > STATUS_CACHE_MS)) {
          const entry: { at: number | undefined; value: ReturnType<typeof collectStatus> } = { at: undefined, value: collectStatus(pool(), q, relay.options.connection) };
          status = entry;
          entry.value.then(
            () => (entry.at = Date.now()),
            () => status === entry && (status = undefined),
          );
        }
        return send(res, 200, await status.value);
      }
      default:
        return send(res, 404, { error: `no route ${path}` });
    }
  };
  const server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      const status = err instanceof HttpError ? err.status : err instanceof OutboxError && err.code === 'NOT_FOUND' ? 404 : err instanceof OutboxError && err.code === 'BUSY' ? 409 : err instanceof OutboxError && ['INVALID_ARGUMENT', 'INVALID_OPTIONS'].includes(err.code) ? 400 : 500;
      if (status === 500) logger.warn({ err, url: req.url }, 'http request failed');
      if (!res.headersSent) send(res, status, { error: status === 500 ? 'internal error' : (err as Error).message });
      else res.destroy();
    });
  });
  server.requestTimeout = 10_000;
  server.headersTimeout = 5_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(address.port, address.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  // The dashboard's history, sampled while the server runs.
  const sample = async () => {
    if (relay.database) relay.activity.sample(await relay.outboxTotals());
  };
  void sample().catch(() => undefined);
  const sampler = setInterval(() => void sample().catch(() => undefined), SAMPLE_MS);
  sampler.unref();
  server.on('close', () => clearInterval(sampler));
  const bound = server.address() as AddressInfo;
  logger.info({ host: bound.address, port: bound.port, mutating: options.adminToken ? 'token' : 'off' }, 'http: dashboard at / ; /healthz /readyz /metrics /api/status /api/stuck /api/rows /api/dead-letters /api/activity');
  return server;
}
