import { sql, type SQL } from 'drizzle-orm';
import { OutboxError } from '../errors.js';

/** A row set as returned by `pg`. */
export interface QueryResult<Row> {
  rows: Row[];
  rowCount?: number | null;
}

/**
 * Anything that runs a parameterised statement: a `pg` Client or PoolClient, or a drizzle
 * database/transaction wrapped by {@link fromDrizzle}.
 */
export interface Queryable {
  query<Row = Record<string, unknown>>(text: string, values?: unknown[]): Promise<QueryResult<Row>>;
}

/** The part of a drizzle database or transaction that {@link fromDrizzle} needs. */
export interface DrizzleExecutor {
  execute(query: SQL): Promise<unknown>;
}

/**
 * Adapts a drizzle transaction (node-postgres or postgres-js driver) to {@link Queryable},
 * so library SQL runs inside the caller's drizzle transaction. `$n` placeholders become
 * drizzle parameters; casts such as `$1::text[]` are kept.
 */
export function fromDrizzle(db: DrizzleExecutor): Queryable {
  return {
    async query<Row>(text: string, values: unknown[] = []): Promise<QueryResult<Row>> {
      const chunks: SQL[] = [];
      let last = 0;
      for (const match of text.matchAll(/\$(\d+)/g)) {
        const index = Number(match[1]) - 1;
        if (index < 0 || index >= values.length) {
          throw new OutboxError('INVALID_ARGUMENT', `placeholder ${match[0]} has no value`);
        }
        chunks.push(sql.raw(text.slice(last, match.index)), sql`${sql.param(values[index])}`);
        last = match.index + match[0].length;
      }
      chunks.push(sql.raw(text.slice(last)));
      const result = await db.execute(sql.join(chunks));
      const rows = (Array.isArray(result) ? result : (result as { rows: Row[] }).rows) as Row[];
      return { rows, rowCount: rows.length };
    },
  };
}

function isPool(db: object): boolean {
  return 'totalCount' in db && 'idleCount' in db && 'connect' in db;
}

/**
 * Accepts a `pg` client (inside the caller's transaction) or a drizzle transaction. A `pg`
 * Pool, or a drizzle database over one, is refused: each of its queries may run on another
 * connection, outside the caller's transaction, which would break the outbox's atomicity.
 */
export function toQueryable(db: unknown): Queryable {
  if (typeof db !== 'object' || db === null) {
    throw new OutboxError('INVALID_ARGUMENT', 'expected a pg client or a drizzle transaction');
  }
  if (isPool(db)) {
    throw new OutboxError(
      'NOT_IN_TRANSACTION',
      'a pg Pool cannot enlist in your transaction: pass the client you called BEGIN on (pool.connect()) or a drizzle transaction',
    );
  }
  // A drizzle database (not a transaction) keeps its driver client as `$client`: over a
  // Pool, each of its statements runs on any connection, outside the caller's transaction.
  const driver = (db as { $client?: unknown }).$client;
  if (typeof driver === 'object' && driver !== null && isPool(driver)) {
    throw new OutboxError(
      'NOT_IN_TRANSACTION',
      'a drizzle database over a pg Pool cannot enlist in your transaction: pass the transaction, db.transaction((tx) => enqueue(tx, ...))',
    );
  }
  // A pg client has query(); drizzle databases and transactions have execute() and a
  // relational `query` namespace that is an object, not a function.
  if (typeof (db as Partial<Queryable>).query === 'function') return db as Queryable;
  if (typeof (db as Partial<DrizzleExecutor>).execute === 'function') return fromDrizzle(db as DrizzleExecutor);
  throw new OutboxError('INVALID_ARGUMENT', 'expected a pg client or a drizzle transaction');
}
