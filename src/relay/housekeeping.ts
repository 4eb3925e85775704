import type pg from 'pg';
import type { Logger } from '../log.js';
import type { RelayEvents } from './events.js';
import type { ResolvedRelayOptions } from './options.js';
import { isPartitioned, maintainPartitions } from './partitions.js';
import { purgeSentRows } from './retention.js';

/** How often housekeeping runs when retention is off (it then only makes a partitioned outbox's partitions ahead). */
const HOUSEKEEPING_MS = 10 * 60_000;

export interface HousekeepingContext {
  pool: pg.Pool;
  options: ResolvedRelayOptions;
  log: Logger;
  events: RelayEvents;
  signal: AbortSignal;
}

/**
 * Housekeeping, done by one relay of the group (the owner of shard 0): a partitioned
 * outbox's partitions (looked up at every run, so an outbox partitioned while relays run
 * is kept too), then retention. At start, partitions are only made ahead (`atStart`).
 */
export async function housekeep(ctx: HousekeepingContext, { atStart = false } = {}): Promise<void> {
  const { pool, options: o, log } = ctx;
  const partitioned = await isPartitioned(pool, o.q);
  // A failed maintenance must not stop retention, nor the other way round.
  if (partitioned) {
    const keepMs = atStart || o.retention === false ? null : o.retention.keepMs;
    await maintainPartitions(pool, o.q, keepMs, log)
      .then((report) => ctx.events.emit('partitions', report))
      .catch((err: unknown) => log.warn({ err }, 'partition maintenance failed'));
  }
  if (!atStart && o.retention !== false) await purgeSentRows(pool, o.q, { ...o.retention, partitioned }, ctx.signal, log);
}

/** How often {@link housekeep} runs. */
export function housekeepingIntervalMs(options: ResolvedRelayOptions): number {
  return options.retention === false ? HOUSEKEEPING_MS : options.retention.intervalMs;
}
