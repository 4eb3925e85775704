import type pg from 'pg';
import { enqueue } from '../../src/outbox/enqueue.js';
import { inTransaction } from './db.js';

/**
 * Commits small transactions (`perTransaction` rows) of outbox rows on a 5 ms timer until
 * `total` rows are written, `keys` distinct keys in rotation. `ids` fills as transactions commit.
 */
export function startWriter(pool: pg.Pool, schema: string, topic: string, total: number, keys = 23, perTransaction = 10) {
  const ids: string[] = [];
  let inFlight = false;
  let failed: unknown;
  let resolveDone!: () => void;
  const done = new Promise<void>((resolve) => (resolveDone = resolve));
  const timer = setInterval(() => {
    if (inFlight) return;
    if (ids.length >= total || failed) {
      clearInterval(timer);
      resolveDone();
      return;
    }
    inFlight = true;
    const n = Math.min(perTransaction, total - ids.length);
    inTransaction(pool, (client) =>
      enqueue(client, Array.from({ length: n }, (_, i) => ({ topic, key: `k${(ids.length + i) % keys}`, payload: { n: ids.length + i } })), { schema }),
    )
      .then((newIds) => ids.push(...newIds))
      .catch((err: unknown) => (failed = err))
      .finally(() => (inFlight = false));
  }, 5);
  return {
    ids,
    done: done.then(() => {
      if (failed) throw failed;
    }),
  };
}
