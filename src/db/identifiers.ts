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
