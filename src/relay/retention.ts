import type pg from 'pg';
import { deleteInBatches } from '../db/batched-delete.js';
import type { Logger } from '../log.js';
import { deleteExpiredClaimChecksSql, deleteExpiredSql } from './sql/retention.js';

/**
 * Deletes sent rows (and claim-check bodies) older than `keepMs`, a bounded batch at a time
 * (see {@link deleteInBatches}); in a partitioned outbox, rows of its default partition only
 * (see deleteExpiredSql). Returns rows deleted.
 */
export async function purgeSentRows(
  pool: pg.Pool,
  sqlSchema: string,
  options: { keepMs: number; batchSize: number; partitioned: boolean },
  signal: AbortSignal,
  logger: Logger,
): Promise<number> {
  const table = options.partitioned ? 'messages_default' : 'messages';
  const total = await deleteInBatches(pool, deleteExpiredSql(sqlSchema, table), [options.keepMs, options.batchSize], options.batchSize, signal);
  if (total > 0) logger.info({ deleted: total }, 'retention removed sent rows');
  const bodies = await deleteInBatches(pool, deleteExpiredClaimChecksSql(sqlSchema), [options.keepMs, options.batchSize], options.batchSize, signal);
  if (bodies > 0) logger.info({ deleted: bodies }, 'retention removed claim-check bodies');
  return total;
}
