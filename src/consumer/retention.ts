import type pg from 'pg';
import type { Logger } from '../log.js';
import { sleep } from '../async.js';
import { deleteInBatches } from '../db/batched-delete.js';
import { purgeInboxSql } from '../sql/consumer-inbox.js';

/**
 * Inbox retention: deletes a group's inbox rows older than `keepMs`, a bounded batch at a
 * time (see {@link deleteInBatches}), never one whose record could still be redelivered (see
 * {@link purgeInboxSql}). Returns the rows deleted.
 */
export async function purgeInbox(
  pool: pg.Pool,
  q: string,
  groupId: string,
  options: { keepMs: number; batchSize: number },
  signal: AbortSignal,
  logger: Logger,
): Promise<number> {
  const total = await deleteInBatches(pool, purgeInboxSql(q), [groupId, options.keepMs, options.batchSize], options.batchSize, signal);
  if (total > 0) logger.info({ deleted: total, keepMs: options.keepMs }, 'inbox retention removed applied outbox ids');
  return total;
}

/** Runs {@link purgeInbox} every `intervalMs` until `signal` aborts; `purged` is told each run's count. */
export async function runInboxRetention(
  target: { pool: pg.Pool; q: string; groupId: string; logger: Logger; signal: AbortSignal },
  retention: { keepMs: number; intervalMs: number; batchSize: number },
  purged: (deleted: number) => void,
): Promise<void> {
  const { signal } = target;
  while (!signal.aborted) {
    await sleep(retention.intervalMs, signal);
    if (signal.aborted) break;
    try {
      purged(await purgeInbox(target.pool, target.q, target.groupId, retention, signal, target.logger));
    } catch (err) {
      target.logger.warn({ err }, 'inbox retention failed; retrying at the next interval');
    }
  }
}
