import type pg from 'pg';
import type { Logger } from '../log.js';
import type { RelayEventMap } from './events.js';
import { isPartitionedSql, maintainPartitionsSql } from '../sql/outbox-partitions.js';

export type PartitionReport = RelayEventMap['partitions'];

export async function isPartitioned(pool: pg.Pool, q: string): Promise<boolean> {
  const { rows } = await pool.query<{ partitioned: boolean }>(isPartitionedSql(q));
  return rows[0]?.partitioned === true;
}

/**
 * One maintenance run of a partitioned outbox: partitions made ahead and, when `keepMs` is
 * given (the relay's retention), expired partitions without rows to keep dropped (see
 * maintain_message_partitions_as_of()). What it did is logged; so is, at warn, a run that
 * stopped at a busy table.
 */
export async function maintainPartitions(pool: pg.Pool, q: string, keepMs: number | null, logger: Logger): Promise<PartitionReport> {
  const { rows } = await pool.query<{ action: string; partition_name: string; detail: string | null }>(maintainPartitionsSql(q), [keepMs]);
  const report: PartitionReport = { created: [], dropped: [], kept: [], busy: [] };
  for (const row of rows) {
    if (row.action === 'created') report.created.push(row.partition_name);
    else if (row.action === 'dropped') report.dropped.push(row.partition_name);
    else (row.action === 'busy' ? report.busy : report.kept).push({ partition: row.partition_name, reason: row.detail ?? '' });
  }
  if (report.created.length > 0 || report.dropped.length > 0) logger.info({ created: report.created, dropped: report.dropped }, 'outbox partitions maintained');
  if (report.busy.length > 0) logger.warn({ busy: report.busy }, 'outbox partition maintenance stopped at a locked table; it goes on at the next run');
  return report;
}
