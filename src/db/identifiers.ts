import { OptionsError } from '../errors.js';

/** The schema the outbox lives in unless an option says otherwise. */
export const DEFAULT_SCHEMA = 'outbox';

/**
 * Validates a schema name and returns it quoted for SQL. Names are restricted to what
 * needs no escaping beyond quotes, so a schema can also be named in NOTIFY channels.
 */
export function quoteSchema(schema: string): string {
  if (!/^[a-z_][a-z0-9_]{0,62}$/.test(schema)) {
    throw new OptionsError(`schema ${JSON.stringify(schema)}: use lower-case letters, digits and _ (max 63)`);
  }
  return `"${schema}"`;
}

/** The LISTEN/NOTIFY channel the insert trigger of `schema.messages` signals. */
export function notifyChannel(schema: string): string {
  return `${schema}.messages`;
}
