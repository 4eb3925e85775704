import type { MessageHeader } from '@confluentinc/kafka-javascript';
import { HEADER } from '../outbox/event.js';
import type { ProduceRecord } from '../kafka/producer.js';
import type { ClaimedRow } from './sql/claimBatch.js';

/** The Kafka record for an outbox row: key, payload bytes, outbox headers then user headers. */
export function toRecord(row: ClaimedRow): ProduceRecord {
  const headers: MessageHeader[] = [{ [HEADER.outboxId]: String(row.id) }, { [HEADER.createdAt]: row.created_at.toISOString() }];
  if (row.event_type !== null) headers.push({ [HEADER.eventType]: row.event_type });
  if (row.aggregate_type !== null) headers.push({ [HEADER.aggregateType]: row.aggregate_type });
  if (row.aggregate_id !== null) headers.push({ [HEADER.aggregateId]: row.aggregate_id });
  if (row.schema_version !== null) headers.push({ [HEADER.schemaVersion]: String(row.schema_version) });
  if (row.traceparent !== null) headers.push({ [HEADER.traceparent]: row.traceparent });
  for (const [name, value] of Object.entries(row.headers ?? {})) headers.push({ [name]: String(value) });
  return { topic: row.topic, key: row.key, value: row.payload, headers };
}

/** Approximate bytes of a record, for the size pre-check. */
export function recordSize(record: ProduceRecord): number {
  let size = (record.key === null ? 0 : Buffer.byteLength(record.key)) + (record.value?.length ?? 0) + 70;
  for (const header of record.headers) {
    for (const [name, value] of Object.entries(header)) size += Buffer.byteLength(name) + (typeof value === 'string' ? Buffer.byteLength(value) : value.length) + 2;
  }
  return size;
}
