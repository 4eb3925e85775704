import { toQueryable } from '../db/queryable.js';
import { DEFAULT_SCHEMA, quoteSchema } from '../db/identifiers.js';
import { ValidationError } from '../errors.js';
import type { OutboxEvent } from './event.js';
import { insertMessagesSql } from './sql/insertMessages.js';
import { DEFAULT_MAX_MESSAGE_BYTES, validateEvent, type EncodedEvent } from './validate.js';

export interface EnqueueOptions {
  /** Schema holding the outbox. Default `outbox`. */
  schema?: string;
  /** Largest record (key + value + headers) accepted, in bytes. Default 1,000,000. */
  maxMessageBytes?: number;
}

/**
 * Writes events to the outbox inside the caller's open transaction. `db` is the `pg`
 * client the caller ran BEGIN on, or a drizzle transaction. Every event is validated
 * before anything is written; an invalid one throws {@link ValidationError} and nothing
 * is inserted. Returns the new row ids (decimal strings), in input order.
 */
export async function enqueue(db: unknown, events: OutboxEvent | readonly OutboxEvent[], options: EnqueueOptions = {}): Promise<string[]> {
  const maxMessageBytes = options.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES;
  if (!Number.isInteger(maxMessageBytes) || maxMessageBytes <= 0) {
    throw new ValidationError('maxMessageBytes', 'must be a positive integer');
  }
  const list = Array.isArray(events) ? (events as readonly OutboxEvent[]) : [events as OutboxEvent];
  const many = Array.isArray(events);
  const encoded: EncodedEvent[] = list.map((event, i) => validateEvent(event, { maxMessageBytes }, many ? i : undefined));
  const queryable = toQueryable(db);
  if (encoded.length === 0) return [];
  const { rows } = await queryable.query<{ id: string }>(insertMessagesSql(quoteSchema(options.schema ?? DEFAULT_SCHEMA)), [
    encoded.map((e) => e.topic),
    encoded.map((e) => e.key),
    encoded.map((e) => e.payload),
    encoded.map((e) => JSON.stringify(e.headers)),
    encoded.map((e) => e.eventType),
    encoded.map((e) => e.aggregateType),
    encoded.map((e) => e.aggregateId),
    encoded.map((e) => e.schemaVersion),
    encoded.map((e) => e.traceparent),
  ]);
  return rows.map((r) => String(r.id));
}
