import { AbortError } from 'p-retry';
import { isInfrastructureError } from '../db/errors.js';
import { OutboxError } from '../errors.js';
import { PING_SQL } from '../sql/catalog.js';
import { HandlerFailure, PartitionRevoked, PollDeadline, type ApplyContext } from './batch.js';
import type { ConsumedRecord } from './record.js';
import type { BatchConnection } from './transaction.js';

// A handler's run inside a batch transaction: raced against its time and against a lost
// assignment, then judged (a timeout, a misuse of the transaction, a swallowed database
// error, a failure of its own or of the database's connection).

/**
 * Runs the handler for one record (`records` of one), or the batch handler for `records`,
 * under `handlerTimeoutMs`. Past it — or when the assignment is lost while it runs — the
 * transaction is aborted at the database, so a hung handler holds no lock and commits
 * nothing, whatever it does later. A failure is charged to `records[0]` at `index` when it
 * is the only record, to no record in particular (index -1) otherwise.
 */
export async function runHandler(ctx: ApplyContext, connection: BatchConnection, records: ConsumedRecord[], index: number): Promise<void> {
  // A handler is started only with its whole time before the poll deadline, so that no
  // batch of this member is open when the group hands its partitions to another.
  if (ctx.pollDeadline() - Date.now() < ctx.handlerTimeoutMs) throw new PollDeadline();
  // The spans end with the call's outcome as judged here (a timeout, a swallowed error),
  // not when a hung handler's promise settles, if ever.
  const spans = records.map((record) => ctx.tracing.startProcess(record, ctx.groupId));
  const batch = ctx.batchHandler;
  const call = batch ? () => batch(records, connection.tx) : () => spans[0]!.run(() => ctx.handler(records[0]!, connection.tx));
  try {
    await judgeHandler(ctx, connection, records[0]!, records.length === 1 ? index : -1, await raceHandler(connection, call, ctx.handlerTimeoutMs));
    for (const span of spans) span.end();
  } catch (err) {
    for (const span of spans) span.end(err instanceof HandlerFailure ? err.cause : err);
    throw err;
  }
}

async function judgeHandler(ctx: ApplyContext, connection: BatchConnection, record: ConsumedRecord, index: number, run: HandlerRun): Promise<void> {
  if (run.kind === 'expired') await connection.abort('handler-timeout');
  if (connection.aborted === 'revoked') throw new PartitionRevoked(`assignment lost while the handler ran (offset ${record.offset}); batch aborted`);
  if (connection.aborted === 'handler-timeout') {
    // The handler waited on a silent connection: the database's failure, not the record's
    // (the batch is retried on a new connection, no attempt charged).
    if (connection.silentLink !== undefined) {
      ctx.onHandlerTimeout(record, connection.silentLink);
      throw Object.assign(new Error(`the batch's database connection went silent: ${connection.silentLink}`), { code: SILENT_CONNECTION });
    }
    ctx.onHandlerTimeout(record);
    throw new HandlerFailure(index, new OutboxError('HANDLER_TIMEOUT', `handler did not finish within handlerTimeoutMs (${ctx.handlerTimeoutMs} ms); its transaction was aborted`));
  }
  // Misuse of the transaction is not retried: it would fail the same way every time.
  if (connection.misuse) throw new HandlerFailure(index, new AbortError(connection.misuse));
  if (connection.transactionEnded) {
    throw new HandlerFailure(index, new AbortError(new OutboxError('TX_CONTROL_REFUSED', 'the handler ended the consumer transaction (COMMIT or ROLLBACK)')));
  }
  if (run.kind === 'failed') {
    // A connection-like error (ECONNREFUSED, ...) may come from the handler's own calls
    // to other services: it is the database's only if this transaction's connection is
    // really gone. Otherwise it is the handler's failure, charged and dead-lettered.
    if (isInfrastructureError(run.error) && !(await connectionAlive(connection))) throw run.error;
    throw new HandlerFailure(index, run.error);
  }
  if (connection.transactionFailed) {
    throw new HandlerFailure(index, new Error('the handler swallowed a database error: the transaction is aborted (SQLSTATE 25P02)'));
  }
}

/** True when the client still talks to the server (an aborted transaction still counts). */
async function connectionAlive(connection: BatchConnection): Promise<boolean> {
  try {
    await connection.client.query(PING_SQL);
    return true;
  } catch (err) {
    return !isInfrastructureError(err);
  }
}

/** SQLSTATE class 08 (connection_failure): what isInfrastructureError counts as the database's. */
const SILENT_CONNECTION = '08006';

export type HandlerRun = { kind: 'done' } | { kind: 'failed'; error: unknown } | { kind: 'expired' } | { kind: 'aborted' };

/**
 * Runs `run` (a handler call on `connection`) for at most `budgetMs`, or until the
 * connection is aborted from outside. A handler that does not return in time is left
 * behind: its later statements meet a closed guard and a terminated backend.
 */
export async function raceHandler(connection: BatchConnection, run: () => Promise<void>, budgetMs: number): Promise<HandlerRun> {
  let timer: NodeJS.Timeout | undefined;
  let onAbort: (() => void) | undefined;
  const expired = new Promise<HandlerRun>((resolve) => {
    timer = setTimeout(() => resolve({ kind: 'expired' }), Math.max(0, budgetMs));
  });
  const aborted = new Promise<HandlerRun>((resolve) => {
    onAbort = () => resolve({ kind: 'aborted' });
    if (connection.signal.aborted) onAbort();
    else connection.signal.addEventListener('abort', onAbort, { once: true });
  });
  const handler = Promise.resolve()
    .then(run)
    .then(
      (): HandlerRun => ({ kind: 'done' }),
      (error: unknown): HandlerRun => ({ kind: 'failed', error }),
    );
  try {
    return await Promise.race([handler, expired, aborted]);
  } finally {
    clearTimeout(timer);
    if (onAbort) connection.signal.removeEventListener('abort', onAbort);
  }
}
