import { sql } from 'drizzle-orm';
import { bigint, customType, integer, jsonb, pgSchema, text, timestamp } from 'drizzle-orm/pg-core';
import { DEFAULT_SCHEMA } from './identifiers.js';

/** `bytea` as a Node Buffer. */
export const bytea = customType<{ data: Buffer; driverData: Buffer }>({
  dataType: () => 'bytea',
});

/** Row states of `messages.state`. */
export const MESSAGE_STATES = ['pending', 'sent', 'failed', 'dead'] as const;
export type MessageState = (typeof MESSAGE_STATES)[number];

/**
 * drizzle definitions of the outbox tables in a given schema. The SQL in `migrations/` is
 * the source of truth; these mirror it (a test checks they agree) so the tables can be
 * part of your own drizzle schema and queried with drizzle.
 */
export function outboxTables(schemaName: string = DEFAULT_SCHEMA) {
  const schema = pgSchema(schemaName);

  const messages = schema.table('messages', {
    id: bigint('id', { mode: 'bigint' }).primaryKey().generatedByDefaultAsIdentity(),
    topic: text('topic').notNull(),
    key: text('key'),
    payload: bytea('payload'),
    headers: jsonb('headers').$type<Record<string, string>>().notNull().default(sql`'{}'::jsonb`),
    eventType: text('event_type'),
    aggregateType: text('aggregate_type'),
    aggregateId: text('aggregate_id'),
    schemaVersion: integer('schema_version'),
    traceparent: text('traceparent'),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
    state: text('state', { enum: MESSAGE_STATES }).notNull().default('pending'),
    attempts: integer('attempts').notNull().default(0),
    lastError: text('last_error'),
    nextAttemptAt: timestamp('next_attempt_at', { withTimezone: true }).notNull().defaultNow(),
    sentAt: timestamp('sent_at', { withTimezone: true }),
    kafkaPartition: integer('kafka_partition'),
    kafkaOffset: bigint('kafka_offset', { mode: 'bigint' }),
  });

  return { schema, messages };
}

/** The outbox tables in the default `outbox` schema. */
export const { messages } = outboxTables();
