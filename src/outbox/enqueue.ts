import { toQueryable } from '../db/queryable.js';
import { DEFAULT_SCHEMA, quoteSchema } from '../db/identifiers.js';
import { OptionsError, ValidationError } from '../errors.js';
import type { OutboxEvent } from './event.js';
import { insertMessagesSql } from '../sql/outbox-insert.js';
import { CLAIM_CHECK_HEADER, encodeReference, resolveClaimCheckOptions, sha256Hex, type ClaimCheckOptions, type ClaimCheckStore } from '../claim-check/store.js';
import { DEFAULT_MAX_MESSAGE_BYTES, MAX_CLAIM_CHECK_ID_LENGTH, validateEvent, type EncodedEvent } from './validate.js';

export interface EnqueueOptions {
  /** Schema holding the outbox. Default `outbox`. */
  schema?: string;
  /** Largest record (key + value + headers) accepted, in bytes. Default 1,000,000. */
  maxMessageBytes?: number;
  /**
   * Payloads larger than `thresholdBytes` are stored in `store` (in this transaction for the
   * built-in PostgreSQL store) and the record carries a reference with size and sha256,
   * which the consumer resolves (its `claimCheck` option).
   */
  claimCheck?: ClaimCheckOptions;
}

/** The names {@link EnqueueOptions} knows: a misspelt one would otherwise be ignored and its default used without a word. */
const ENQUEUE_OPTIONS: ReadonlySet<string> = new Set(['schema', 'maxMessageBytes', 'claimCheck'] satisfies Array<keyof EnqueueOptions>);

/**
 * Writes events to the outbox inside the caller's open transaction. `db` is the `pg`
 * client the caller ran BEGIN on, or a drizzle transaction. Every event is validated
 * before anything is written; an invalid one throws {@link ValidationError} and nothing
 * is inserted. Returns the new row ids (decimal strings), in input order.
 */
export async function enqueue(db: unknown, events: OutboxEvent | readonly OutboxEvent[], options: EnqueueOptions = {}): Promise<string[]> {
  if (typeof options !== 'object' || options === null || Array.isArray(options)) throw new OptionsError('enqueue options must be an object');
  for (const name of Object.keys(options)) {
    if (!ENQUEUE_OPTIONS.has(name)) throw new OptionsError(`${name} is not an enqueue option (known: ${[...ENQUEUE_OPTIONS].join(', ')})`);
  }
  const maxMessageBytes = options.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES;
  if (!Number.isInteger(maxMessageBytes) || maxMessageBytes <= 0) {
    throw new ValidationError('maxMessageBytes', 'must be a positive integer');
  }
  const list = Array.isArray(events) ? (events as readonly OutboxEvent[]) : [events as OutboxEvent];
  const many = Array.isArray(events);
  const claimCheck = resolveClaimCheckOptions(options.claimCheck);
  const encoded: EncodedEvent[] = list.map((event, i) => validateEvent(event, { maxMessageBytes, claimCheck }, many ? i : undefined));
  const queryable = toQueryable(db);
  if (encoded.length === 0) return [];
  if (claimCheck) {
    for (const [i, event] of encoded.entries()) {
      if (!event.offload) continue;
      encoded[i] = await offload(db, claimCheck.store, event, many ? i : undefined);
    }
  }
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
  const ids = rows.map((r) => String(r.id));
  if (claimCheck?.store.link) {
    for (const [i, event] of encoded.entries()) {
      if (event.headers[CLAIM_CHECK_HEADER] === undefined) continue;
      await claimCheck.store.link(db, (JSON.parse(event.payload!.toString()) as { id: string }).id, ids[i]!);
    }
  }
  return ids;
}

/** Stores the payload out of band and puts the reference in its place. */
async function offload(db: unknown, store: ClaimCheckStore, event: EncodedEvent, index: number | undefined): Promise<EncodedEvent> {
  const body = event.payload!;
  const sha256 = sha256Hex(body);
  const id = await store.put(db, body, { size: body.length, sha256, topic: event.topic });
  if (typeof id !== 'string' || id.length === 0 || id.length > MAX_CLAIM_CHECK_ID_LENGTH) {
    throw new ValidationError('payload', `claim-check store ${store.name} returned an id that is not 1-${MAX_CLAIM_CHECK_ID_LENGTH} characters`, index);
  }
  const { offload: _, ...rest } = event;
  return {
    ...rest,
    payload: encodeReference({ v: 1, store: store.name, id, size: body.length, sha256 }),
    headers: { ...event.headers, [CLAIM_CHECK_HEADER]: store.name },
  };
}
