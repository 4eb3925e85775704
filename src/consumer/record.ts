import type { Message, MessageHeader } from '@confluentinc/kafka-javascript';
import type { ClaimCheckReference } from '../claim-check/store.js';
import { HEADER, RESERVED_HEADERS } from '../outbox/event.js';

/** Outbox headers of a record, decoded; `raw` holds every header as a UTF-8 string. */
export interface RecordHeaders {
  outboxId: string | undefined;
  /**
   * The source id of the outbox the record came from (header `outbox-source`). Outbox ids
   * are unique only per source; records of relays older than this header have none.
   */
  source: string | undefined;
  eventType: string | undefined;
  aggregateType: string | undefined;
  aggregateId: string | undefined;
  schemaVersion: number | undefined;
  createdAt: Date | undefined;
  traceparent: string | undefined;
  /**
   * All headers by name. When a name repeats on a record: for a name the relay sets itself
   * ({@link RESERVED_HEADERS}, any letter case) the FIRST value wins, since the relay writes
   * its own headers first and older relays appended a row's forged copies after them; for
   * any other name the last value wins.
   */
  raw: Record<string, string>;
}

/** One Kafka record as the handler sees it. */
export interface ConsumedRecord {
  topic: string;
  partition: number;
  offset: number;
  /** The key bytes, or `null` for a record without key. */
  key: Buffer | null;
  /** The value bytes, or `null` for a tombstone. */
  value: Buffer | null;
  headers: RecordHeaders;
  /** Record timestamp (ms since the epoch), when the broker reports one. */
  timestamp: number | undefined;
  /**
   * Set when the event's body was stored out of band (claim-check): the reference the
   * record carried. With the consumer's `claimCheck` stores, `value` is the body itself,
   * verified against it; without, `value` is the reference as JSON.
   */
  claimCheck?: ClaimCheckReference;
}

function toBuffer(value: unknown): Buffer | null {
  if (value === null || value === undefined) return null;
  if (Buffer.isBuffer(value)) return value;
  return Buffer.from(String(value));
}

/** A record's header list as a map, by the rule documented on {@link RecordHeaders.raw}. */
function headerMap(headers: readonly MessageHeader[]): Record<string, string> {
  const raw: Record<string, string> = {};
  for (const header of headers) {
    for (const [name, value] of Object.entries(header)) {
      if (Object.hasOwn(raw, name) && RESERVED_HEADERS.has(name.toLowerCase())) continue;
      raw[name] = toBuffer(value)?.toString('utf8') ?? '';
    }
  }
  return raw;
}

/**
 * Decodes the outbox headers of a record: from its header list in record order (repeated
 * names resolved as documented on {@link RecordHeaders.raw}), or from a map already built.
 */
export function decodeHeaders(headers: Record<string, string> | readonly MessageHeader[]): RecordHeaders {
  const raw = Array.isArray(headers) ? headerMap(headers) : (headers as Record<string, string>);
  const version = raw[HEADER.schemaVersion];
  const created = raw[HEADER.createdAt];
  const createdAt = created === undefined ? undefined : new Date(created);
  return {
    outboxId: raw[HEADER.outboxId],
    source: raw[HEADER.source],
    eventType: raw[HEADER.eventType],
    aggregateType: raw[HEADER.aggregateType],
    aggregateId: raw[HEADER.aggregateId],
    schemaVersion: version !== undefined && /^\d+$/.test(version) ? Number(version) : undefined,
    createdAt: createdAt && !Number.isNaN(createdAt.getTime()) ? createdAt : undefined,
    traceparent: raw[HEADER.traceparent],
    raw,
  };
}

/** librdkafka message → {@link ConsumedRecord}. */
export function toConsumedRecord(message: Message): ConsumedRecord {
  return {
    topic: message.topic,
    partition: message.partition,
    offset: message.offset,
    key: toBuffer(message.key),
    value: toBuffer(message.value),
    headers: decodeHeaders(message.headers ?? []),
    timestamp: typeof message.timestamp === 'number' && message.timestamp >= 0 ? message.timestamp : undefined,
  };
}
