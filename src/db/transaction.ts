import type pg from 'pg';
import { isInfrastructureError } from './errors.js';

export interface WithTransactionOptions<T> {
  /** Statement(s) that open the transaction. Default `begin`. */
  begin?: string;
  /** ROLLBACK instead of COMMIT when this returns false (a dry run). Default: commit. */
  commit?: (result: T) => boolean;
}

/**
 * Runs `body` in one transaction on a client of its own: COMMIT when it returns (or
 * ROLLBACK, see `commit`), ROLLBACK when it throws (rethrown). A client whose connection
 * failed is destroyed instead of going back to the pool. The
 * consumer's batches have their own (consumer/transaction.ts): they guard the client they
 * hand to a handler.
 */
export async function withTransaction<T>(pool: pg.Pool, body: (client: pg.PoolClient) => Promise<T>, options: WithTransactionOptions<T> = {}): Promise<T> {
  const client = await pool.connect();
  let broken: Error | undefined;
  try {
    await client.query(options.begin ?? 'begin');
    const result = await body(client);
    await client.query((options.commit?.(result) ?? true) ? 'commit' : 'rollback');
    return result;
  } catch (err) {
    // After the body's own error (a refusal, a constraint) the session rolls back; after a
    // connection's failure (dropped, silent past query_timeout) the client just goes, and
    // so does one whose ROLLBACK fails.
    if (isInfrastructureError(err)) broken = err as Error;
    else await client.query('rollback').catch((rollbackError: unknown) => (broken = rollbackError as Error));
    throw err;
  } finally {
    client.release(broken);
  }
}
