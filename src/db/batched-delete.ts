import type pg from 'pg';
import { sleep } from '../async.js';

/**
 * Runs a bounded DELETE (one that removes at most `batchSize` rows) until a batch comes
 * back short or `signal` aborts, pausing briefly between batches: retention never holds
 * long locks, never competes with the hot path for long, and leaves dead tuples in amounts
 * autovacuum keeps up with. Returns the rows deleted.
 */
export async function deleteInBatches(pool: pg.Pool, sql: string, values: unknown[], batchSize: number, signal: AbortSignal): Promise<number> {
  let total = 0;
  while (!signal.aborted) {
    const { rowCount } = await pool.query(sql, values);
    total += rowCount ?? 0;
    if ((rowCount ?? 0) < batchSize) break;
    await sleep(20, signal);
  }
  return total;
}
