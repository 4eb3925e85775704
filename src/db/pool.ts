import pg from 'pg';
import type { Logger } from '../log.js';
import { redactUrl } from '../log.js';

// int8 (bigint) columns arrive as decimal strings; outbox ids stay exact that way.

/**
 * A `pg` Pool that logs (instead of crashing the process on) errors of idle clients, which
 * is what happens when PostgreSQL restarts or drops connections.
 */
export function createPool(connectionString: string, logger: Logger, options: pg.PoolConfig = {}): pg.Pool {
  const pool = new pg.Pool({
    connectionString,
    max: 10,
    connectionTimeoutMillis: 10_000,
    keepAlive: true,
    application_name: 'outbox-relay',
    ...options,
  });
  pool.on('error', (err) => logger.warn({ err, db: redactUrl(connectionString) }, 'idle postgres client error'));
  return pool;
}
