import { drizzle, type NodePgDatabase } from 'drizzle-orm/node-postgres';
import type pg from 'pg';
import type { Queryable, QueryResult } from '../db/queryable.js';

/**
 * What a handler gets: the connection of the transaction that also stores the offset.
 * `query` is the `pg` client's; `drizzle` is a drizzle handle on the same client (built on
 * first use). Do not COMMIT or ROLLBACK through either: the consumer does.
 */
export interface HandlerTx extends Queryable {
  readonly client: pg.PoolClient;
  readonly drizzle: NodePgDatabase;
}

export function handlerTx(client: pg.PoolClient): HandlerTx {
  let db: NodePgDatabase | undefined;
  return {
    client,
    async query<Row>(text: string, values?: unknown[]): Promise<QueryResult<Row>> {
      const result = await client.query(text, values);
      return { rows: result.rows as Row[], rowCount: result.rowCount };
    },
    get drizzle(): NodePgDatabase {
      db ??= drizzle(client);
      return db;
    },
  };
}

/**
 * Runs `fn` in BEGIN … COMMIT on a client of its own. ROLLBACK when `fn` throws (rethrown) or
 * when `shouldCommit(result)` is false.
 */
export async function inTransaction<T>(
  pool: pg.Pool,
  fn: (client: pg.PoolClient) => Promise<T>,
  shouldCommit: (result: T) => boolean = () => true,
): Promise<T> {
  const client = await pool.connect();
  let broken: Error | undefined;
  try {
    await client.query('begin');
    let result: T;
    try {
      result = await fn(client);
    } catch (err) {
      await client.query('rollback').catch((rollbackError: unknown) => {
        broken = rollbackError as Error;
      });
      throw err;
    }
    try {
      await client.query(shouldCommit(result) ? 'commit' : 'rollback');
    } catch (err) {
      if (isConnectionError(err)) broken = err as Error;
      throw err;
    }
    return result;
  } finally {
    // A client whose connection broke is destroyed instead of going back to the pool.
    client.release(broken);
  }
}

/** SQLSTATE class 08 (connection exception), admin shutdown, or an error without SQLSTATE. */
function isConnectionError(err: unknown): boolean {
  const code = (err as { code?: unknown }).code;
  return typeof code !== 'string' || code.startsWith('08') || code === '57P01';
}
