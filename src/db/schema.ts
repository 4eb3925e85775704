import { sql } from 'drizzle-orm';
import { bigint, boolean, customType, integer, jsonb, pgSchema, primaryKey, text, timestamp } from 'drizzle-orm/pg-core';
import { DEFAULT_SCHEMA } from './identifiers.js';

/** `bytea` as a Node Buffer. */
export const bytea = customType<{ data: Buffer; driverData: Buffer }>({
  dataType: () => 'bytea',
});

/** Row states of `messages.state`. */
export const MESSAGE_STATES = ['pending', 'sent', 'failed', 'dead', 'skipped'] as const;
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
    // The last failed attempts, oldest first (migrations/0015_error_history.sql).
    errors: jsonb('errors').$type<Array<{ at: string; attempt: number; error: string }>>(),
    nextAttemptAt: timestamp('next_attempt_at', { withTimezone: true }).notNull().defaultNow(),
    sentAt: timestamp('sent_at', { withTimezone: true }),
    kafkaPartition: integer('kafka_partition'),
    kafkaOffset: bigint('kafka_offset', { mode: 'bigint' }),
    // Held back behind an earlier failed or dead row of its key (migrations/0006_held_rows.sql).
    held: boolean('held').notNull().default(false),
  });

  // Consumer side (migrations/0003_consumer.sql).
  const consumerOffsets = schema.table(
    'consumer_offsets',
    {
      groupId: text('group_id').notNull(),
      topic: text('topic').notNull(),
      partition: integer('partition').notNull(),
      nextOffset: bigint('next_offset', { mode: 'bigint' }).notNull(),
      /** Kafka topic id (base64) of the incarnation the offset belongs to; `null` until known. */
      topicId: text('topic_id'),
      updatedAt: timestamp('updated_at', { withTimezone: true }).notNull().defaultNow(),
    },
    (t) => [primaryKey({ columns: [t.groupId, t.topic, t.partition] })],
  );

  const deadLetters = schema.table(
    'dead_letters',
    {
      id: bigint('id', { mode: 'bigint' }).primaryKey().generatedByDefaultAsIdentity(),
      groupId: text('group_id').notNull(),
      topic: text('topic').notNull(),
      partition: integer('partition').notNull(),
      offset: bigint('offset', { mode: 'bigint' }).notNull(),
      key: bytea('key'),
      value: bytea('value'),
      headers: jsonb('headers').$type<Record<string, string>>().notNull().default(sql`'{}'::jsonb`),
      error: text('error').notNull(),
      attempts: integer('attempts').notNull(),
      failedAt: timestamp('failed_at', { withTimezone: true }).notNull().defaultNow(),
      replayedAt: timestamp('replayed_at', { withTimezone: true }),
      // On-call requests (migrations/0010_dead_letter_requests.sql).
      replayRequestedAt: timestamp('replay_requested_at', { withTimezone: true }),
      discardedAt: timestamp('discarded_at', { withTimezone: true }),
      discardReason: text('discard_reason'),
      /** Topic id of the log the record came from (unique per group, position and incarnation; see migration 0004). */
      topicId: text('topic_id'),
    },
  );

  const consumerInbox = schema.table(
    'consumer_inbox',
    {
      groupId: text('group_id').notNull(),
      /** Source id of the publishing outbox (header `outbox-source`); '' for rows from before sources. */
      source: text('source').notNull(),
      outboxId: text('outbox_id').notNull(),
      topic: text('topic').notNull(),
      partition: integer('partition').notNull(),
      offset: bigint('offset', { mode: 'bigint' }).notNull(),
      appliedAt: timestamp('applied_at', { withTimezone: true }).notNull().defaultNow(),
      /** Topic id of the log the record was applied from; `null` for rows from before topic ids. */
      topicId: text('topic_id'),
    },
    (t) => [primaryKey({ columns: [t.groupId, t.source, t.outboxId] })],
  );

  // This outbox's source id, sent as header outbox-source (migrations/0005_outbox_source.sql).
  const outboxSource = schema.table('outbox_source', {
    singleton: boolean('singleton').primaryKey().default(true),
    sourceId: text('source_id').notNull().default(sql`gen_random_uuid()::text`),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
  });

  return { schema, messages, consumerOffsets, deadLetters, consumerInbox, outboxSource };
}

/** The outbox tables in the default `outbox` schema. */
export const { messages } = outboxTables();
