import type pg from 'pg';
import { deleteInBatches } from '../db/batched-delete.js';
import type { Logger } from '../log.js';
import { deleteExpiredClaimChecksSql, deleteExpiredInKeptPartitionsSql, deleteExpiredSql } from '../sql/outbox-retention.js';

/**
 * Deletes sent rows (and claim-check bodies) older than `keepMs`, a bounded batch at a time
 * (see {@link deleteInBatches}); in a partitioned outbox, rows of its default partition and
 * of the expired partitions kept for rows they hold (see deleteExpiredSql). Returns rows
 * deleted.
 */
export async function purgeSentRows(
  pool: pg.Pool,
  q: string,
  options: { keepMs: number; batchSize: number; partitioned: boolean },
  signal: AbortSignal,
  logger: Logger,
): Promise<number> {
  const statements = options.partitioned
    ? [deleteExpiredSql(q, 'messages_default'), deleteExpiredInKeptPartitionsSql(q)]
    : [deleteExpiredSql(q)];
  let total = 0;
  for (const sql of statements) total += await deleteInBatches(pool, sql, [options.keepMs, options.batchSize], options.batchSize, signal);
  if (total > 0) logger.info({ deleted: total }, 'retention removed sent rows');
  const bodies = await deleteInBatches(pool, deleteExpiredClaimChecksSql(q), [options.keepMs, options.batchSize], options.batchSize, signal);
  if (bodies > 0) logger.info({ deleted: bodies }, 'retention removed claim-check bodies');
  return total;
}
