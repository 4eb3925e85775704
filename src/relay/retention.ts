import type pg from 'pg';
import type { Logger } from '../log.js';
import { deleteExpiredSql } from './sql/retention.js';
import { sleep } from './wakeup.js';

/**
 * Deletes sent rows older than `keepMs`, a bounded batch at a time with a pause between
 * batches, so retention never holds long locks, never competes with the relay for long,
 * and leaves dead tuples in amounts autovacuum keeps up with. Returns rows deleted.
 */
export async function purgeSentRows(
  pool: pg.Pool,
  sqlSchema: string,
  options: { keepMs: number; batchSize: number },
  signal: AbortSignal,
  logger: Logger,
): Promise<number> {
  const sql = deleteExpiredSql(sqlSchema);
  let total = 0;
  while (!signal.aborted) {
    const { rowCount } = await pool.query(sql, [options.keepMs, options.batchSize]);
    total += rowCount ?? 0;
    if ((rowCount ?? 0) < options.batchSize) break;
    await sleep(20, signal);
  }
  if (total > 0) logger.info({ deleted: total }, 'retention removed sent rows');
  return total;
}
