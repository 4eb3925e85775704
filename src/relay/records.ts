import type { Logger } from '../log.js';
import { HEADER, recordHeaders } from '../outbox/event.js';
import { recordBytes } from '../kafka/record-size.js';
import type { ProduceRecord } from '../kafka/producer.js';
import type { ClaimedRow } from '../sql/outbox-claim.js';

/**
 * The Kafka record for an outbox row: key, payload bytes, the relay's headers then the
 * row's own headers.
 *
 * A row's header with a reserved name (any letter case) is dropped, so the relay's values
 * are the only ones on the record: a copy further down would win with consumers that take
 * the last value of a name, and let a row forge its id or source. `enqueue` and the
 * database refuse such names, but rows written before migration 0005 may hold them; the
 * names (never the values) are logged once per row.
 */
export function toRecord(row: ClaimedRow, source: string, log: Logger): ProduceRecord {
  const { headers, dropped } = recordHeaders({
    id: String(row.id),
    source,
    createdAt: row.created_at.toISOString(),
    eventType: row.event_type,
    aggregateType: row.aggregate_type,
    aggregateId: row.aggregate_id,
    schemaVersion: row.schema_version,
    traceparent: row.traceparent,
    headers: row.headers ?? {},
  });
  if (dropped.length > 0) log.warn({ id: row.id, headers: dropped }, 'row headers with names the relay sets were dropped');
  return { topic: row.topic, key: row.key, value: row.payload, headers: headers.map(([name, value]) => ({ [name]: value })) };
}

/**
 * Why a row's headers cannot go on a record as they are, if they cannot. The schema only
 * requires a JSON object; a row written by plain SQL may hold numbers, objects or nulls,
 * which would reach Kafka as `1`, `[object Object]` or `null`. Such a row is parked (dead,
 * with this text) instead of published with headers it did not mean.
 */
export function invalidHeaders(headers: Record<string, unknown> | null): string | undefined {
  for (const [name, value] of Object.entries(headers ?? {})) {
    if (typeof value !== 'string') {
      const kind = value === null ? 'null' : Array.isArray(value) ? 'an array' : typeof value === 'object' ? 'an object' : `a ${typeof value}`;
      return `header ${JSON.stringify(name.slice(0, 255))} is ${kind}, not a string: a row's headers must be a JSON object of string values (fix the row, then outbox-relay retry it)`;
    }
  }
  return undefined;
}

/** The record's size under the one size rule (see recordBytes). */
export function recordSize(record: ProduceRecord): number {
  return recordBytes(record.key, record.value, record.headers.flatMap((h) => Object.entries<string | Buffer>(h)));
}

/**
 * `record` carrying `traceparent` (the tracing's, see Tracing) as its only traceparent
 * header. A record that would then exceed `limit` (a row without a traceparent of its own,
 * close to the limit) is sent as it is: tracing never makes a record too large.
 */
export function tracedRecord(record: ProduceRecord, own: string | null, traceparent: string | undefined, limit: number): ProduceRecord {
  if (traceparent === undefined || traceparent === own) return record;
  const headers = record.headers.filter((h) => !Object.hasOwn(h, HEADER.traceparent));
  headers.push({ [HEADER.traceparent]: traceparent });
  const traced = { ...record, headers };
  return recordSize(traced) <= limit ? traced : record;
}
