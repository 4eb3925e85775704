import type pg from 'pg';
import type { Logger } from '../log.js';
import type { RelayEventMap } from './events.js';
import { isPartitionedSql, maintainPartitionsSql } from './sql/partitions.js';

export type PartitionReport = RelayEventMap['partitions'];

export async function isPartitioned(pool: pg.Pool, sqlSchema: string): Promise<boolean> {
  const { rows } = await pool.query<{ partitioned: boolean }>(isPartitionedSql(sqlSchema));
  return rows[0]?.partitioned === true;
}

/**
 * One maintenance run of a partitioned outbox: partitions made ahead and, when `keepMs` is
 * given (the relay's retention), expired partitions dropped, the rows they had to keep moved
 * to the default partition first (see maintain_message_partitions()). What it did is
 * logged, and so is a partition left for the next run, with the reason.
 */
export async function maintainPartitions(pool: pg.Pool, sqlSchema: string, keepMs: number | null, logger: Logger): Promise<PartitionReport> {
  const { rows } = await pool.query<{ action: string; partition_name: string; detail: string | null }>(maintainPartitionsSql(sqlSchema), [keepMs]);
  const report: PartitionReport = { created: [], dropped: [], busy: [] };
  for (const row of rows) {
    if (row.action === 'created') report.created.push(row.partition_name);
    else if (row.action === 'dropped') report.dropped.push(row.partition_name);
    else report.busy.push({ partition: row.partition_name, reason: row.detail ?? '' });
  }
  const done = rows.filter((r) => r.action !== 'busy');
  if (done.length > 0) logger.info({ partitions: done.map((r) => ({ [r.action]: r.partition_name, ...(r.detail ? { detail: r.detail } : {}) })) }, 'outbox partitions maintained');
  if (report.busy.length > 0) logger.warn({ busy: report.busy }, 'outbox partitions left for the next run');
  return report;
}
