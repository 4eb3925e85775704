import pg from 'pg';

/**
 * SQLSTATE classes of errors that belong to the row a statement writes, not to the
 * database, the session or the relay's role: data exceptions (22), integrity constraint
 * violations (23: a CHECK the row breaks, NOT VALID ones included, since PostgreSQL checks
 * those on every update), program limits (54: an index entry too large, 54000), and an
 * exception raised by a trigger on the row (P0001). Anything else (a connection lost, a
 * timeout, a failover, a privilege missing) fails the shard cycle and is retried.
 */
const ROW_SQLSTATE_CLASSES = ['22', '23', '54'];
const ROW_SQLSTATES = ['P0001'];

/** Whether PostgreSQL refused a statement for the row it writes (see ROW_SQLSTATE_CLASSES). */
export function isRowDatabaseError(err: unknown): err is pg.DatabaseError {
  if (!(err instanceof pg.DatabaseError) || typeof err.code !== 'string') return false;
  return ROW_SQLSTATE_CLASSES.includes(err.code.slice(0, 2)) || ROW_SQLSTATES.includes(err.code);
}

/** Rows one shard worker sets aside at most; past it, a refused mark fails the shard cycle as before. */
export const MAX_SET_ASIDE_ROWS = 1_000;

interface Entry {
  key: string | null;
  failures: number;
  untilMs: number;
}

/**
 * Rows the database refused to mark failed or dead, kept out of the shard's claims for a
 * while. Such a row was not published (the broker refused it, or it was refused before
 * producing), so it stays pending in the table; without this, every claim would return it
 * again, the mark would fail again, and the shard would retry that batch forever, every
 * other key of the shard with it. While a row is set aside, the later rows of its key are
 * left out of the claims too (per-key order: it is still the key's first unsent row). After
 * a backoff (doubling, as a failing row's) it is claimed and tried again, so a row whose
 * cause an operator removed goes on by itself. In memory only: a new owner of the shard
 * finds such a row again with one refused mark.
 */
export class SetAsideRows {
  private readonly rows = new Map<string, Entry>();

  constructor(private readonly backoff: { minMs: number; maxMs: number }) {}

  /** Sets the row aside; returns until when, or undefined when MAX_SET_ASIDE_ROWS are set aside already. */
  add(row: { id: string; key: string | null }, now = Date.now()): Date | undefined {
    const failures = (this.rows.get(row.id)?.failures ?? 0) + 1;
    if (failures === 1 && this.rows.size >= MAX_SET_ASIDE_ROWS) return undefined;
    const untilMs = now + Math.min(this.backoff.maxMs, this.backoff.minMs * 2 ** Math.min(failures - 1, 30));
    this.rows.set(row.id, { key: row.key, failures, untilMs });
    return new Date(untilMs);
  }

  /** The row was marked or sent after all: nothing of it is set aside any more. */
  delete(id: string): void {
    this.rows.delete(id);
  }

  /** Ids and keys the next claim leaves out: rows set aside whose backoff has not run out yet. */
  excluded(now = Date.now()): { ids: string[]; keys: string[] } {
    const ids: string[] = [];
    const keys = new Set<string>();
    for (const [id, entry] of this.rows) {
      // Not claimed again long after its backoff: gone from the table or repaired by hand.
      if (now - entry.untilMs > this.backoff.maxMs) this.rows.delete(id);
      if (entry.untilMs <= now) continue;
      ids.push(id);
      if (entry.key !== null) keys.add(entry.key);
    }
    return { ids, keys: [...keys] };
  }
}
