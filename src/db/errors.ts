import pg from 'pg';

/** SQLSTATEs of a session the server ended: admin shutdown, crash shutdown, cannot connect now. */
const SESSION_ENDED = new Set(['57P01', '57P02', '57P03']);

/**
 * Whether a client that failed with `err` may serve again. After an error PostgreSQL sent
 * about the statement (a constraint, a timeout it enforced) the session is fine; after any
 * other (the connection dropped, or went silent past `query_timeout`) or one that ended the
 * session, its state is unknown and the client is destroyed, never put back in its pool.
 */
export function reusableAfter(err: unknown): boolean {
  if (!(err instanceof pg.DatabaseError)) return false;
  const code = err.code ?? '';
  return !code.startsWith('08') && !SESSION_ENDED.has(code);
}

/**
 * Errors of the database or of the way to it, not of the statement: the connection
 * refused, reset, timed out or ended (or silent past the pool's `query_timeout`), the
 * server shutting down or out of connections.
 * The consumer retries these from its loop and never charges them to a record.
 */
export function isInfrastructureError(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && (code.startsWith('08') || SESSION_ENDED.has(code) || ['53300', 'ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE'].includes(code))) {
    return true;
  }
  const message = err instanceof Error ? err.message : '';
  return /Connection terminated|connection timeout|Client has encountered a connection error|Query read timeout/i.test(message);
}
