/** JSON values a payload may be given as. */
export type JsonValue = string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue };

/** One event to publish, as handed to {@link enqueue}. */
export interface OutboxEvent {
  /** Kafka topic: 1–249 characters of `[A-Za-z0-9._-]`, not `.` or `..`. */
  topic: string;
  /**
   * Record key. Rows with the same key go to the same partition, in outbox order. `null` or
   * absent: no key (no ordering between such rows). At most `MAX_KEY_BYTES` (2,048)
   * bytes of UTF-8.
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

/** What the relay turns into a record's headers: its own ones, then the row's. */
export interface HeaderFields {
  id: string;
  source: string;
  createdAt: string;
  eventType: string | null;
  aggregateType: string | null;
  aggregateId: string | null;
  schemaVersion: number | null;
  traceparent: string | null;
  headers: Record<string, string>;
}

/**
 * A record's headers in the order the relay writes them: {@link HEADER}s first, then the
 * row's own. A row header with a reserved name (any letter case) is left out and reported
 * in `dropped`, so the relay's values are the only ones of those names on the record.
 */
export function recordHeaders(fields: HeaderFields): { headers: Array<[string, string]>; dropped: string[] } {
  const headers: Array<[string, string]> = [
    [HEADER.outboxId, fields.id],
    [HEADER.source, fields.source],
    [HEADER.createdAt, fields.createdAt],
  ];
  if (fields.eventType !== null) headers.push([HEADER.eventType, fields.eventType]);
  if (fields.aggregateType !== null) headers.push([HEADER.aggregateType, fields.aggregateType]);
  if (fields.aggregateId !== null) headers.push([HEADER.aggregateId, fields.aggregateId]);
  if (fields.schemaVersion !== null) headers.push([HEADER.schemaVersion, String(fields.schemaVersion)]);
  if (fields.traceparent !== null) headers.push([HEADER.traceparent, fields.traceparent]);
  const dropped: string[] = [];
  for (const [name, value] of Object.entries(fields.headers)) {
    if (RESERVED_HEADERS.has(name.toLowerCase())) dropped.push(name);
    else headers.push([name, String(value)]);
  }
  return { headers, dropped };
}

/**
 * The relay's header values at their largest, for sizing a record before its row exists:
 * the largest bigint id, the longest source id `outbox_source` allows (200 characters;
 * the default, a UUID, has 36) and a timestamp.
 */
export const LARGEST_RELAY_FIELDS = {
  id: '9223372036854775807',
  source: 'x'.repeat(200),
  createdAt: '2000-01-01T00:00:00.000Z',
} as const;
