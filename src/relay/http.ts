import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { OutboxError } from '../errors.js';
import type { Logger } from '../log.js';
import { collectStatus } from '../ops/status.js';
import type { Relay } from './relay.js';

/** The relay's HTTP port unless told otherwise. */
export const DEFAULT_HTTP_PORT = 9464;

export interface HttpAddress {
  host: string;
  port: number;
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
 * The relay's HTTP surface, read-only: `GET /healthz` (the process answers), `GET /readyz`
 * (database and brokers answer, the relay runs and its group serves the outbox: 200, or
 * 503 with the reason), `GET /metrics` (Prometheus text), `GET /api/status` (what
 * `outbox-relay status --json` prints).
 */
export async function serveRelayHttp(relay: Relay, address: HttpAddress, logger: Logger): Promise<Server> {
  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') return send(res, 405, { error: 'only GET is served here' });
    switch (path) {
      case '/healthz':
        return send(res, 200, { status: 'ok' });
      case '/readyz': {
        const readiness = await relay.readiness();
        return send(res, readiness.ready ? 200 : 503, readiness);
      }
      case '/metrics':
        return send(res, 200, await relay.metrics.metrics(), relay.metrics.contentType);
      case '/api/status': {
        const pool = relay.database;
        if (!pool) return send(res, 503, { error: 'the relay is not started' });
        return send(res, 200, await collectStatus(pool, relay.options.sqlSchema, String(relay.options.connection.brokers)));
      }
      default:
        return send(res, 404, { error: `no route ${path}` });
    }
  };
  const server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      logger.warn({ err, url: req.url }, 'http request failed');
      if (!res.headersSent) send(res, 500, { error: 'internal error' });
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
  const bound = server.address() as AddressInfo;
  logger.info({ host: bound.address, port: bound.port }, 'http: /healthz /readyz /metrics /api/status');
  return server;
}
