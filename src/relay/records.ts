import type { MessageHeader } from '@confluentinc/kafka-javascript';
import type { Logger } from '../log.js';
import { HEADER, RESERVED_HEADERS } from '../outbox/event.js';
import type { ProduceRecord } from '../kafka/producer.js';
import type { ClaimedRow } from './sql/claimBatch.js';

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
  const headers: MessageHeader[] = [
    { [HEADER.outboxId]: String(row.id) },
    { [HEADER.source]: source },
    { [HEADER.createdAt]: row.created_at.toISOString() },
  ];
  if (row.event_type !== null) headers.push({ [HEADER.eventType]: row.event_type });
  if (row.aggregate_type !== null) headers.push({ [HEADER.aggregateType]: row.aggregate_type });
  if (row.aggregate_id !== null) headers.push({ [HEADER.aggregateId]: row.aggregate_id });
  if (row.schema_version !== null) headers.push({ [HEADER.schemaVersion]: String(row.schema_version) });
  if (row.traceparent !== null) headers.push({ [HEADER.traceparent]: row.traceparent });
  const dropped: string[] = [];
  for (const [name, value] of Object.entries(row.headers ?? {})) {
    if (RESERVED_HEADERS.has(name.toLowerCase())) dropped.push(name);
    else headers.push({ [name]: String(value) });
  }
  if (dropped.length > 0) log.warn({ id: row.id, headers: dropped }, 'row headers with names the relay sets were dropped');
  return { topic: row.topic, key: row.key, value: row.payload, headers };
}

/** Approximate bytes of a record, for the size pre-check (every header counts, `outbox-source` too). */
export function recordSize(record: ProduceRecord): number {
  let size = (record.key === null ? 0 : Buffer.byteLength(record.key)) + (record.value?.length ?? 0) + 70;
  for (const header of record.headers) {
    for (const [name, value] of Object.entries(header)) size += Buffer.byteLength(name) + (typeof value === 'string' ? Buffer.byteLength(value) : value.length) + 2;
  }
  return size;
}
