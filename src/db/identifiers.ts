import { OptionsError } from '../errors.js';

/** The schema the outbox lives in unless an option says otherwise. */
export const DEFAULT_SCHEMA = 'outbox';

/**
 * Validates a schema name and returns it quoted for SQL. Names are restricted to what
 * needs no escaping beyond quotes, so a schema can also be named in NOTIFY channels, and
 * short enough for the channel `<schema>.messages` (at most {@link MAX_SCHEMA_LENGTH}
 * characters): a longer one would pass `migrate` and then fail every insert.
 */
export function quoteSchema(schema: string): string {
  if (!/^[a-z_][a-z0-9_]*$/.test(schema)) {
    throw new OptionsError(`schema ${JSON.stringify(schema)}: use lower-case letters, digits and _`);
  }
  if (notifyChannel(schema).length > MAX_IDENTIFIER_BYTES) {
    throw new OptionsError(
      `schema ${JSON.stringify(schema)} is ${schema.length} characters: at most ${MAX_SCHEMA_LENGTH}, so that the outbox's ` +
        `NOTIFY channel ${JSON.stringify(notifyChannel(schema))} fits PostgreSQL's ${MAX_IDENTIFIER_BYTES}-byte limit`,
    );
  }
  return `"${schema}"`;
}

/** PostgreSQL identifiers, NOTIFY channel names included, hold at most 63 bytes (NAMEDATALEN - 1). */
const MAX_IDENTIFIER_BYTES = 63;
/** The longest schema name whose channel `<schema>.messages` still fits. */
export const MAX_SCHEMA_LENGTH = MAX_IDENTIFIER_BYTES - '.messages'.length;

/** The LISTEN/NOTIFY channel the insert trigger of `schema.messages` signals. */
export function notifyChannel(schema: string): string {
  return `${schema}.messages`;
}

/** Role names PostgreSQL reserves (also when quoted), besides the `pg_` prefix. */
const RESERVED_ROLE_NAMES = new Set(['public', 'none', 'current_user', 'session_user', 'current_role']);

/**
 * Validates a role name and returns it quoted for SQL: any name of 1–63 bytes without NUL
 * (quotes are doubled), but those PostgreSQL reserves (`pg_…`, `public`, `none`, …),
 * which it would refuse with a less helpful message.
 */
export function quoteRole(name: string): string {
  if (name.length === 0 || name.includes('\u0000') || Buffer.byteLength(name) > MAX_IDENTIFIER_BYTES) {
    throw new OptionsError(`role ${JSON.stringify(name)}: a role name has 1-${MAX_IDENTIFIER_BYTES} bytes and no NUL`);
  }
  if (name.startsWith('pg_') || RESERVED_ROLE_NAMES.has(name.toLowerCase())) {
    throw new OptionsError(`role ${JSON.stringify(name)}: PostgreSQL reserves this name`);
  }
  return `"${name.replaceAll('"', '""')}"`;
}

/** A string as an SQL literal: quotes doubled, and written E'…' with backslashes doubled when it holds any. */
export function quoteLiteral(text: string): string {
  if (text.includes('\u0000')) throw new OptionsError('an SQL literal cannot hold NUL');
  const quoted = `'${text.replaceAll("'", "''")}'`;
  return text.includes('\\') ? `E${quoted.replaceAll('\\', '\\\\')}` : quoted;
}
