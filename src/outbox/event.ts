/** JSON values a payload may be given as. */
export type JsonValue = string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue };

/** One event to publish, as handed to {@link enqueue}. */
export interface OutboxEvent {
  /** Kafka topic: 1–249 characters of `[A-Za-z0-9._-]`, not `.` or `..`. */
  topic: string;
  /**
   * Record key. Rows with the same key go to the same partition, in outbox order. `null` or
   * absent: no key (no ordering between such rows).
   */
  key?: string | null;
  /**
   * Record value. A Buffer/Uint8Array is sent as is, a string as UTF-8, anything else as
   * its JSON text. `null` is a tombstone (a record with no value).
   */
  payload: Buffer | Uint8Array | string | JsonValue | object;
  /** User headers, passed through to Kafka. Names must not collide with {@link RESERVED_HEADERS}. */
  headers?: Record<string, string>;
  /** Sent as header `event-type`. */
  eventType?: string;
  /** Sent as header `aggregate-type`. */
  aggregateType?: string;
  /** Sent as header `aggregate-id`. */
  aggregateId?: string;
  /** Sent as header `schema-version`; a positive integer. */
  schemaVersion?: number;
  /** W3C trace context, sent as header `traceparent`. */
  traceparent?: string;
}

/**
 * Headers the relay sets on records itself. A row cannot supply them: `enqueue` refuses the
 * names, the database refuses them in plain-SQL inserts (migration 0005), and the relay drops
 * them from older rows. Keep in sync with `reserved_header_names()` in that migration.
 */
export const HEADER = {
  outboxId: 'outbox-id',
  /** The outbox's source id (`outbox_source.source_id`): outbox ids are unique only per source. */
  source: 'outbox-source',
  eventType: 'event-type',
  aggregateType: 'aggregate-type',
  aggregateId: 'aggregate-id',
  schemaVersion: 'schema-version',
  createdAt: 'created-at',
  traceparent: 'traceparent',
} as const;

/** The names of {@link HEADER}, lower case; compare with a name's `toLowerCase()`. */
export const RESERVED_HEADERS: ReadonlySet<string> = new Set(Object.values(HEADER));
