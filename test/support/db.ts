import pg from 'pg';
import { inject } from 'vitest';
import { migrate } from '../../src/db/migrate.js';
import { HalfOpenProxy } from '../../chaos/proxy.js';
import { uniqueName } from './wait.js';

export function databaseUrl(): string {
  return inject('databaseUrl');
}

export function testPool(max = 5): pg.Pool {
  const pool = new pg.Pool({ connectionString: databaseUrl(), max });
  pool.on('error', () => undefined);
  return pool;
}

/**
 * A migrated schema of its own for one test file or test (`t_...`; dropped at the start of
 * the next run, so a failing test's rows stay for inspection).
 */
export async function freshSchema(pool: pg.Pool): Promise<string> {
  const schema = uniqueName('t').toLowerCase();
  await migrate({ db: pool, schema });
  return schema;
}

/** Runs `fn` inside BEGIN/COMMIT on one client; rolls back and rethrows on error. */
export async function inTransaction<T>(pool: pg.Pool, fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
  const client = await pool.connect();
  try {
    await client.query('begin');
    const result = await fn(client);
    await client.query('commit');
    return result;
  } catch (err) {
    await client.query('rollback').catch(() => undefined);
    throw err;
  } finally {
    client.release();
  }
}

/**
 * A loopback proxy in front of the test database that can turn every connection through it
 * half-open (see chaos/proxy.ts), and the database URL through it. Stop the proxy after.
 */
export async function halfOpenDatabase(): Promise<{ proxy: HalfOpenProxy; url: string }> {
  const direct = new URL(databaseUrl());
  const proxy = new HalfOpenProxy(0, { host: direct.hostname, port: Number(direct.port || 5432) });
  await proxy.start();
  const proxied = new URL(databaseUrl());
  proxied.port = String(proxy.address);
  return { proxy, url: proxied.toString() };
}
