import type { EventEmitter } from 'node:events';
import { drizzle, NodePgTransaction } from 'drizzle-orm/node-postgres';
import type pg from 'pg';
import { reusableAfter } from '../db/errors.js';
import type { Queryable, QueryResult } from '../db/queryable.js';
import { OutboxError } from '../errors.js';
import { SILENT_LINK_MS, silentLinkReason, terminateTransaction } from './backend-abort.js';
import { transactionControlStatement } from './tx-control.js';

/** A drizzle transaction over the batch's connection: its `transaction()` is a SAVEPOINT. */
export type HandlerDrizzle = NodePgTransaction<Record<string, never>, Record<string, never>>;

/**
 * What a handler gets: the transaction that also stores the offset. Every statement goes
 * through the same guard: COMMIT, ROLLBACK, BEGIN (and the like) are refused with
 * `TX_CONTROL_REFUSED`, and the record is then failed without retries, never applied
 * half-committed. `drizzle` is a drizzle *transaction* on the same connection, so a nested
 * `tx.drizzle.transaction(...)` is a savepoint. Nothing works on `tx` once the batch has
 * ended (`TX_CLOSED`).
 */
export interface HandlerTx extends Queryable {
  /** The batch's pg client behind the same guard; `release()` is refused. */
  readonly client: pg.PoolClient;
  readonly drizzle: HandlerDrizzle;
}


/** Why a batch's transaction was aborted at the database while a handler ran. */
export type AbortReason = 'handler-timeout' | 'revoked';

type QueryArgs = [textOrConfig: string | { text: string }, values?: unknown, callback?: unknown];

/**
 * The connection of one batch transaction, guarded. It watches the server's transaction
 * status (ReadyForQuery), refuses transaction control, and can abort the transaction at
 * the database — terminating the backend, not just dropping the socket, so locks are
 * released even while a statement runs — when a handler overruns or the partition is lost.
 */
export class BatchConnection {
  private status = 'T';
  private closed = false;
  /** The transaction is ending (ROLLBACK or COMMIT sent): statements are refused. */
  private sealed = false;
  /** The refused statement, when a handler tried to end the consumer's transaction. */
  misuse: OutboxError | undefined;
  /** The results of the transaction's opening statements (`begin` and what was sent with it). */
  opening: pg.QueryResult[] = [];
  /** The transaction's start as the server reports it (`now()`), once known: aborts target exactly it. */
  transactionStart: string | undefined;
  /** Set once the transaction was aborted from outside. */
  aborted: AbortReason | undefined;
  /**
   * Set by an abort that found the link to the server broken rather than the handler slow:
   * a statement had waited for its answer for over {@link SILENT_LINK_MS} while the server
   * had no statement of this transaction running (it was waiting for one, or the
   * transaction was gone). A handler timeout then is the connection's, not the record's.
   */
  silentLink: string | undefined;
  /** When each statement in flight was sent (performance.now()), by a sequence number: oldest first. */
  private readonly inFlight = new Map<number, number>();
  private sent = 0;
  private readonly abortController = new AbortController();
  /** Aborts when {@link abort} is called: a hung handler's wait is cut short. */
  readonly signal: AbortSignal = this.abortController.signal;
  readonly tx: HandlerTx;
  private readonly connection: EventEmitter | undefined;
  private readonly strings: { standard: boolean };
  private readonly onError = (): void => undefined;

  private readonly onReady = (message: { status?: string }) => {
    if (typeof message.status === 'string') this.status = message.status;
  };

  constructor(
    readonly client: pg.PoolClient,
    private readonly pool: pg.Pool,
  ) {
    this.connection = (client as unknown as { connection?: EventEmitter }).connection;
    this.connection?.on('readyForQuery', this.onReady);
    this.strings = stringSettings(client, this.connection);
    // The server may end the session on its own (idle-in-transaction timeout, terminate):
    // a checked-out pg client with no listener would throw that error out of the process.
    client.on('error', this.onError);
    this.tx = this.handlerTx();
  }

  /** The server reports no transaction block any more: something ended it. */
  get transactionEnded(): boolean {
    return this.status === 'I';
  }

  /** A statement failed and the transaction is aborted (a handler swallowed the error). */
  get transactionFailed(): boolean {
    return this.status === 'E';
  }

  /** Runs a statement of the consumer's own or of the handler, through the guard. */
  query(...[textOrConfig, values, callback]: QueryArgs): Promise<pg.QueryResult> {
    if (typeof values === 'function' || typeof callback === 'function') {
      // pg's callback style: query(text, cb) or query(text, values, cb).
      const cb = (typeof values === 'function' ? values : callback) as (err: Error | null, result?: pg.QueryResult) => void;
      // The error goes to the callback only, as with pg itself (no unhandled rejection).
      // Called outside the promise chain, as pg does: a throwing callback is not swallowed.
      return this.query(textOrConfig, typeof values === 'function' ? undefined : values).then(
        (result) => {
          process.nextTick(cb, null, result);
          return result;
        },
        (err: Error) => {
          process.nextTick(cb, err);
          return undefined as never;
        },
      );
    }
    if (this.closed || this.sealed) {
      return Promise.reject(new OutboxError('TX_CLOSED', 'the batch transaction has ended; a handler must not use its tx after returning'));
    }
    const text = typeof textOrConfig === 'string' ? textOrConfig : textOrConfig?.text;
    const refused = typeof text === 'string' ? transactionControlStatement(text, { backslashEscapes: !this.strings.standard }) : undefined;
    if (refused !== undefined) {
      this.misuse ??= new OutboxError(
        'TX_CONTROL_REFUSED',
        `a handler must not run ${refused.toUpperCase()}: the consumer commits the record's effects together with its offset ` +
          '(use tx.drizzle.transaction(...) or SAVEPOINT for a nested transaction)',
      );
      return Promise.reject(this.misuse);
    }
    const result = (this.client.query as (t: unknown, v?: unknown) => Promise<pg.QueryResult>)(textOrConfig, values);
    // A submittable (a cursor, a stream) answers no promise: it is not followed.
    if (typeof (result as { finally?: unknown } | undefined)?.finally !== 'function') return result;
    const statement = ++this.sent;
    this.inFlight.set(statement, performance.now());
    return result.finally(() => this.inFlight.delete(statement));
  }

  /** The oldest statement in flight (its number, and how long it has waited in ms), if any. */
  private oldestInFlight(): { statement: number; waitedMs: number } | undefined {
    const oldest = this.inFlight.entries().next();
    return oldest.done ? undefined : { statement: oldest.value[0], waitedMs: performance.now() - oldest.value[1] };
  }

  /**
   * Aborts the transaction at the database: `pg_terminate_backend` from another pool
   * connection (a backend busy in a statement or idle in the transaction alike), then the
   * socket. The handler's pending and later statements fail; the client is never reused.
   */
  async abort(reason: AbortReason): Promise<void> {
    if (this.aborted || this.closed) return;
    this.aborted = reason;
    this.abortController.abort();
    const pid = (this.client as unknown as { processID?: number }).processID;
    const pending = this.oldestInFlight();
    if (typeof pid === 'number') {
      const state = await terminateTransaction(this.pool, pid, this.transactionStart);
      // The abort's round trip also read whatever this connection had received meanwhile: a
      // statement whose answer only sat unread (an event loop busy in the handler) is settled
      // by now. One still waiting, long before the abort, while the server ran nothing, went
      // unanswered because the connection went silent.
      if (pending && pending.waitedMs > SILENT_LINK_MS && this.inFlight.has(pending.statement)) this.silentLink = silentLinkReason(state, pending.waitedMs);
    }
    (this.client as unknown as { connection?: { stream?: { destroy(): void } } }).connection?.stream?.destroy();
  }

  /**
   * The transaction is about to end: from now on the guard refuses every statement. Called
   * before ROLLBACK or COMMIT is sent, so that a handler still running (left behind by a
   * timeout or an abort) cannot queue a statement behind them: it would run after the
   * transaction, on its own, and commit.
   */
  seal(): void {
    this.sealed = true;
  }

  /** The batch is over: the guard refuses everything from now on. */
  close(): void {
    this.sealed = true;
    this.closed = true;
    this.connection?.off('readyForQuery', this.onReady);
    // An aborted client is destroyed, and its late errors must still be caught.
    if (!this.aborted) this.client.off('error', this.onError);
  }

  private handlerTx(): HandlerTx {
    const query = this.query.bind(this);
    const client = new Proxy(this.client, {
      get(target, property) {
        if (property === 'query') return query;
        if (property === 'release') {
          return () => {
            throw new OutboxError('TX_CONTROL_REFUSED', 'a handler must not release the batch connection');
          };
        }
        const value: unknown = Reflect.get(target, property, target);
        return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
      },
    });
    let db: HandlerDrizzle | undefined;
    return {
      client,
      async query<Row>(text: string, values?: unknown[]): Promise<QueryResult<Row>> {
        const result = await query(text, values);
        return { rows: result.rows as Row[], rowCount: result.rowCount };
      },
      get drizzle(): HandlerDrizzle {
        // A drizzle database over the guarded client, turned into a transaction object at
        // depth 0: drizzle nests `transaction()` calls of a transaction as savepoints.
        if (!db) {
          const base = drizzle(client) as unknown as { dialect: never; session: never };
          db = new NodePgTransaction(base.dialect, base.session, undefined);
        }
        return db;
      },
    };
  }
}

const settings = new WeakMap<object, { standard: boolean }>();

/**
 * standard_conforming_strings of a connection, followed for its whole life (a handler's
 * session-level SET outlives its batch): when off, `\` escapes in '…' strings, and the
 * transaction-control guard must split statements as the server does. One listener per
 * connection, attached on first use.
 */
function stringSettings(client: object, connection: EventEmitter | undefined): { standard: boolean } {
  let state = settings.get(client);
  if (!state) {
    const created = { standard: true };
    connection?.on('parameterStatus', (message: { parameterName?: string; parameterValue?: string }) => {
      if (message.parameterName === 'standard_conforming_strings') created.standard = message.parameterValue !== 'off';
    });
    settings.set(client, created);
    state = created;
  }
  return state;
}

export interface TransactionOptions<T> {
  /** Statement(s) that open the transaction (e.g. BEGIN plus SET LOCAL timeouts). Default `begin`. */
  begin?: string;
  /** ROLLBACK instead of COMMIT when this returns false. */
  shouldCommit?: (result: T) => boolean;
}

/**
 * Runs `fn` in a transaction on a client of its own, behind a {@link BatchConnection}.
 * ROLLBACK when `fn` throws (rethrown) or `shouldCommit(result)` is false. A client whose
 * connection broke or was aborted is destroyed instead of going back to the pool.
 */
export async function inTransaction<T>(pool: pg.Pool, fn: (connection: BatchConnection) => Promise<T>, options: TransactionOptions<T> = {}): Promise<T> {
  const client = await pool.connect();
  let broken: Error | undefined;
  // A connection lost while the client is checked out raises 'error' on it, during BEGIN
  // and after the batch's own guard is closed too: with no listener that would end the
  // process. The client is destroyed instead.
  const onLost = (err: Error) => {
    broken ??= err;
  };
  client.on('error', onLost);
  let connection: BatchConnection | undefined;
  try {
    let begun: unknown;
    try {
      begun = await client.query(options.begin ?? 'begin');
    } catch (err) {
      // Half-begun (a statement after BEGIN failed, a lock wait timed out): rolled back, so
      // the client goes back to the pool clean; one whose connection failed never does.
      if (!reusableAfter(err)) broken = err as Error;
      else await client.query('rollback').catch((rollbackError: unknown) => (broken = rollbackError as Error));
      throw err;
    }
    connection = new BatchConnection(client, pool);
    const results = (Array.isArray(begun) ? begun : [begun]) as pg.QueryResult[];
    connection.opening = results;
    connection.transactionStart = (results.at(-1)?.rows?.[0] as { xact_start?: string } | undefined)?.xact_start;
    let result: T;
    try {
      result = await fn(connection);
    } catch (err) {
      connection.seal();
      await client.query('rollback').catch((rollbackError: unknown) => {
        broken = rollbackError as Error;
      });
      throw err;
    }
    connection.seal();
    try {
      await client.query((options.shouldCommit?.(result) ?? true) ? 'commit' : 'rollback');
    } catch (err) {
      if (!reusableAfter(err)) broken = err as Error;
      throw err;
    }
    return result;
  } finally {
    connection?.close();
    if (connection?.aborted) broken ??= new Error(`batch transaction aborted (${connection.aborted})`);
    // A client whose connection broke is destroyed instead of going back to the pool.
    client.off('error', onLost);
    client.release(broken);
  }
}
