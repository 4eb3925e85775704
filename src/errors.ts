/**
 * Typed errors. Every error the library throws on purpose is an {@link OutboxError} with a
 * stable `code` and a `retriable` flag; the underlying error, if any, is the standard
 * `cause`.
 */

export type OutboxErrorCode =
  | 'INVALID_EVENT'
  | 'INVALID_OPTIONS'
  | 'INVALID_ARGUMENT'
  | 'NOT_IN_TRANSACTION'
  | 'MIGRATION_FAILED'
  /** The database role lacks a privilege the operation needs (SQLSTATE 42501): the message names it; see `outbox-relay roles`. */
  | 'PERMISSION_DENIED'
  | 'KAFKA_ERROR'
  | 'TOPIC_UNSAFE'
  /** Another relay group serves this outbox (or took it over): see the message for how to take over. */
  | 'GROUP_CONFLICT'
  /** A claim-check reference that cannot be resolved: store unknown, body missing or not matching its checksum. */
  | 'CLAIM_CHECK_INVALID'
  | 'HANDLER_TIMEOUT'
  | 'TX_CONTROL_REFUSED'
  | 'TX_CLOSED'
  | 'PARTITION_REVOKED'
  | 'OFFSET_OUT_OF_RANGE'
  | 'NOT_FOUND'
  | 'STOPPED'
  /** Something that runs one at a time (a playground try) is running already. */
  | 'BUSY'
  | 'UNKNOWN';

export class OutboxError extends Error {
  override readonly name: string = 'OutboxError';
  readonly code: OutboxErrorCode;
  readonly retriable: boolean;

  constructor(code: OutboxErrorCode, message: string, options: { cause?: unknown; retriable?: boolean } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.retriable = options.retriable ?? false;
  }
}

/** An event handed to `enqueue` is invalid. `field` names the offending field, `index` the event. */
export class ValidationError extends OutboxError {
  override readonly name = 'ValidationError';
  readonly field: string;
  readonly index: number | undefined;

  constructor(field: string, message: string, index?: number) {
    super('INVALID_EVENT', index === undefined ? `${field}: ${message}` : `events[${index}].${field}: ${message}`);
    this.field = field;
    this.index = index;
  }
}

/** Options passed to a constructor are invalid or unsafe. */
export class OptionsError extends OutboxError {
  override readonly name = 'OptionsError';
  constructor(message: string) {
    super('INVALID_OPTIONS', message);
  }
}

/** Turns anything thrown into an `Error` without losing it. */
export function coerceError(thrown: unknown): Error {
  if (thrown instanceof Error) return thrown;
  if (typeof thrown === 'object' && thrown !== null && 'message' in thrown) {
    const err = new Error(String((thrown).message), { cause: thrown });
    return Object.assign(err, thrown);
  }
  return new Error(typeof thrown === 'string' ? thrown : JSON.stringify(thrown), { cause: thrown });
}

/** One line of error text for storing on a row: message plus the chain of causes. */
export function describeError(thrown: unknown, maxLength = 2000): string {
  const parts: string[] = [];
  let current: unknown = thrown;
  for (let depth = 0; current !== undefined && current !== null && depth < 5; depth++) {
    const err = coerceError(current);
    const code = (err as { code?: unknown }).code;
    parts.push(code === undefined ? err.message : `${err.message} [${String(code)}]`);
    current = err.cause === current ? undefined : err.cause;
  }
  const text = parts.join(' <- caused by: ');
  return text.length > maxLength ? `${text.slice(0, maxLength - 1)}…` : text;
}
