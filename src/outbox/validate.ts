import { ValidationError } from '../errors.js';
import { DEFAULT_MAX_RECORD_BYTES, recordBytes, tooLargeMessage } from '../kafka/record-size.js';
import { CLAIM_CHECK_HEADER, encodeReference, type ClaimCheckOptions } from '../claim-check/store.js';
import { LARGEST_RELAY_FIELDS, recordHeaders, RESERVED_HEADERS, type OutboxEvent } from './event.js';
import { keyBytes, MAX_KEY_BYTES } from './key-size.js';

/** The relay's default limit: the producer's default `message.max.bytes`. */
export const DEFAULT_MAX_MESSAGE_BYTES = DEFAULT_MAX_RECORD_BYTES;

const TOPIC_RE = /^[A-Za-z0-9._-]{1,249}$/;
const TRACEPARENT_RE = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}$/;
const MAX_META_LENGTH = 1024;

/** An event after validation, in the shape of the `messages` columns. */
export interface EncodedEvent {
  topic: string;
  key: string | null;
  payload: Buffer | null;
  headers: Record<string, string>;
  eventType: string | null;
  aggregateType: string | null;
  aggregateId: string | null;
  schemaVersion: number | null;
  traceparent: string | null;
  /** Set when the payload goes to the claim-check store: `enqueue` replaces it by a reference. */
  offload?: true;
}

export function validateTopic(topic: unknown, index?: number): string {
  if (typeof topic !== 'string') throw new ValidationError('topic', `must be a string, got ${typeOf(topic)}`, index);
  if (!TOPIC_RE.test(topic) || topic === '.' || topic === '..') {
    throw new ValidationError(
      'topic',
      `${JSON.stringify(topic.slice(0, 300))} is not a legal Kafka topic name (1-249 characters of A-Z a-z 0-9 . _ -, not "." or "..")`,
      index,
    );
  }
  return topic;
}

function typeOf(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'array';
  if (Buffer.isBuffer(value)) return 'Buffer';
  return typeof value;
}

/** PostgreSQL text cannot hold NUL; say so here instead of failing the caller's transaction. */
function checkText(field: string, value: string, index: number | undefined, maxLength?: number): string {
  if (value.includes('\u0000')) throw new ValidationError(field, 'must not contain NUL (\\u0000) characters', index);
  if (maxLength !== undefined && value.length > maxLength) {
    throw new ValidationError(field, `must be at most ${maxLength} characters, got ${value.length}`, index);
  }
  return value;
}

function optionalText(field: string, value: unknown, index: number | undefined): string | null {
  if (value === undefined || value === null) return null;
  if (typeof value !== 'string' || value.length === 0) {
    throw new ValidationError(field, `must be a non-empty string, got ${typeOf(value)}`, index);
  }
  return checkText(field, value, index, MAX_META_LENGTH);
}

function encodePayload(payload: unknown, index: number | undefined): Buffer | null {
  if (payload === null) return null;
  if (payload === undefined) throw new ValidationError('payload', 'is required (use null for a tombstone)', index);
  if (Buffer.isBuffer(payload)) return payload;
  if (payload instanceof Uint8Array) return Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength);
  if (typeof payload === 'string') return Buffer.from(payload, 'utf8');
  let json: string | undefined;
  try {
    json = JSON.stringify(payload);
  } catch (cause) {
    throw new ValidationError('payload', `is not JSON-serialisable: ${(cause as Error).message}`, index);
  }
  if (json === undefined) throw new ValidationError('payload', `is not JSON-serialisable (${typeOf(payload)})`, index);
  return Buffer.from(json, 'utf8');
}

function validateHeaders(headers: unknown, index: number | undefined): Record<string, string> {
  if (headers === undefined || headers === null) return {};
  if (typeof headers !== 'object' || Array.isArray(headers) || Buffer.isBuffer(headers)) {
    throw new ValidationError('headers', `must be an object of string values, got ${typeOf(headers)}`, index);
  }
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(headers)) {
    if (name.length === 0) throw new ValidationError('headers', 'header names must not be empty', index);
    checkText('headers', name, index, 255);
    if (name.toLowerCase() === CLAIM_CHECK_HEADER) {
      throw new ValidationError(`headers.${name}`, 'is set by enqueue for claim-checked payloads (option claimCheck)', index);
    }
    if (RESERVED_HEADERS.has(name.toLowerCase())) {
      throw new ValidationError(`headers.${name}`, 'is set by the relay; use the event field of that name instead', index);
    }
    if (typeof value !== 'string') {
      throw new ValidationError(`headers.${name}`, `must be a string, got ${typeOf(value)}`, index);
    }
    out[name] = checkText(`headers.${name}`, value, index);
  }
  return out;
}

function validateTraceparent(value: unknown, index: number | undefined): string | null {
  if (value === undefined || value === null) return null;
  const match = typeof value === 'string' ? TRACEPARENT_RE.exec(value) : null;
  if (!match || match[1] === 'ff' || /^0+$/.test(match[2]!) || /^0+$/.test(match[3]!)) {
    throw new ValidationError('traceparent', 'must be a W3C traceparent such as 00-<32 hex trace id>-<16 hex span id>-01', index);
  }
  return value as string;
}

/**
 * The size the relay will compute for this event's record (the one size rule,
 * {@link recordBytes}), with the relay's own header values at their largest.
 */
export function encodedSize(event: EncodedEvent): number {
  const { headers } = recordHeaders({
    ...LARGEST_RELAY_FIELDS,
    eventType: event.eventType,
    aggregateType: event.aggregateType,
    aggregateId: event.aggregateId,
    schemaVersion: event.schemaVersion,
    traceparent: event.traceparent,
    headers: event.headers,
  });
  return recordBytes(event.key, event.payload, headers);
}

/** The fields of an {@link OutboxEvent}: any other is a slip that would otherwise be lost without a word. */
const EVENT_FIELDS: ReadonlyArray<keyof OutboxEvent> = ['topic', 'key', 'payload', 'headers', 'eventType', 'aggregateType', 'aggregateId', 'schemaVersion', 'traceparent'];

function refuseUnknownFields(e: Record<string, unknown>, index: number | undefined): void {
  for (const name of Object.keys(e)) {
    if ((EVENT_FIELDS as readonly string[]).includes(name)) continue;
    const meant = EVENT_FIELDS.find((field) => field.toLowerCase() === name.toLowerCase().replaceAll(/[_-]/g, ''));
    throw new ValidationError(
      name.slice(0, 100),
      `is not a field of an outbox event${meant ? ` (did you mean ${meant}?)` : ''}; the fields are ${EVENT_FIELDS.join(', ')}; nothing was written`,
      index,
    );
  }
}

/**
 * Checks one event and encodes it. Throws {@link ValidationError} naming the field (an
 * unknown field too, with the one it was probably meant to be); nothing has been written
 * when it throws.
 */
export function validateEvent(
  event: unknown,
  options: { maxMessageBytes: number; claimCheck?: Required<ClaimCheckOptions> | undefined },
  index?: number,
): EncodedEvent {
  if (typeof event !== 'object' || event === null || Array.isArray(event)) {
    throw new ValidationError('event', `must be an object, got ${typeOf(event)}`, index);
  }
  const e = event as Partial<OutboxEvent> & Record<string, unknown>;
  refuseUnknownFields(e, index);
  const topic = validateTopic(e.topic, index);
  let key: string | null = null;
  if (e.key !== undefined && e.key !== null) {
    if (typeof e.key !== 'string') {
      throw new ValidationError('key', `must be a string or null, got ${typeOf(e.key)}`, index);
    }
    key = checkText('key', e.key, index);
    const bytes = keyBytes(key);
    if (bytes > MAX_KEY_BYTES) {
      throw new ValidationError('key', `must be at most ${MAX_KEY_BYTES} bytes of UTF-8 (MAX_KEY_BYTES), got ${bytes}; send a hash of a longer key`, index);
    }
  }
  const schemaVersion = e.schemaVersion ?? null;
  if (schemaVersion !== null && (!Number.isInteger(schemaVersion) || schemaVersion < 1 || schemaVersion > 2_147_483_647)) {
    throw new ValidationError('schemaVersion', `must be a positive integer, got ${String(schemaVersion)}`, index);
  }
  const encoded: EncodedEvent = {
    topic,
    key,
    payload: encodePayload(e.payload, index),
    headers: validateHeaders(e.headers, index),
    eventType: optionalText('eventType', e.eventType, index),
    aggregateType: optionalText('aggregateType', e.aggregateType, index),
    aggregateId: optionalText('aggregateId', e.aggregateId, index),
    schemaVersion,
    traceparent: validateTraceparent(e.traceparent, index),
  };
  const claimCheck = options.claimCheck;
  if (claimCheck && encoded.payload !== null && encoded.payload.length > claimCheck.thresholdBytes) {
    if (encoded.payload.length > claimCheck.maxBodyBytes) {
      throw new ValidationError('payload', `is ${encoded.payload.length} bytes, over claimCheck.maxBodyBytes (${claimCheck.maxBodyBytes})`, index);
    }
    // The record will carry a reference: it is what must fit (with an id of the longest length a reference may have).
    const reference = placeholderReference(claimCheck.store.name, encoded.payload.length);
    const size = encodedSize({ ...encoded, payload: reference, headers: { ...encoded.headers, [CLAIM_CHECK_HEADER]: claimCheck.store.name } });
    if (size > options.maxMessageBytes) throw new ValidationError('headers', `${tooLargeMessage(size, options.maxMessageBytes)} even with the payload claim-checked`, index);
    return { ...encoded, offload: true };
  }
  const size = encodedSize(encoded);
  if (size > options.maxMessageBytes) {
    throw new ValidationError(
      'payload',
      `${tooLargeMessage(size, options.maxMessageBytes)} (enqueue option maxMessageBytes, which must equal the relay's limit)`,
      index,
    );
  }
  return encoded;
}

/** Longest store id a reference may carry. */
export const MAX_CLAIM_CHECK_ID_LENGTH = 200;

function placeholderReference(store: string, size: number): Buffer {
  return encodeReference({ v: 1, store, id: 'x'.repeat(MAX_CLAIM_CHECK_ID_LENGTH), size, sha256: '0'.repeat(64) });
}
