import type { Message } from '@confluentinc/kafka-javascript';
import { HEADER } from '../outbox/event.js';

/** Outbox headers of a record, decoded; `raw` holds every header as a UTF-8 string. */
export interface RecordHeaders {
  outboxId: string | undefined;
  eventType: string | undefined;
  aggregateType: string | undefined;
  aggregateId: string | undefined;
  schemaVersion: number | undefined;
  createdAt: Date | undefined;
  traceparent: string | undefined;
  /** All headers by name (the last value wins when a name repeats). */
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
}

function toBuffer(value: unknown): Buffer | null {
  if (value === null || value === undefined) return null;
  if (Buffer.isBuffer(value)) return value;
  return Buffer.from(String(value));
}

/** Decodes the outbox headers from a raw header map. */
export function decodeHeaders(raw: Record<string, string>): RecordHeaders {
  const version = raw[HEADER.schemaVersion];
  const created = raw[HEADER.createdAt];
  const createdAt = created === undefined ? undefined : new Date(created);
  return {
    outboxId: raw[HEADER.outboxId],
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
  const raw: Record<string, string> = {};
  for (const header of message.headers ?? []) {
    for (const [name, value] of Object.entries(header)) raw[name] = toBuffer(value)?.toString('utf8') ?? '';
  }
  return {
    topic: message.topic,
    partition: message.partition,
    offset: message.offset,
    key: toBuffer(message.key),
    value: toBuffer(message.value),
    headers: decodeHeaders(raw),
    timestamp: typeof message.timestamp === 'number' && message.timestamp >= 0 ? message.timestamp : undefined,
  };
}
