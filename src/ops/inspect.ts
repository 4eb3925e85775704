import type pg from 'pg';
import type { Queryable } from '../db/queryable.js';
import { OutboxError } from '../errors.js';
import { CLAIM_CHECK_HEADER } from '../claim-check/store.js';
import { knownTopicSql, showRowSql, stuckRowsSql, unsentKeySql } from '../sql/outbox-inspect.js';
import { knownGroupSql, knownGroupTopicSql, listDeadLettersSql } from '../sql/outbox-repair.js';

/** Bytes of a payload or value shown by `show` and the API. */
export const PREVIEW_BYTES = 512;

/** The first bytes of a payload as text when they read as UTF-8 text, else as hex. */
export function preview(head: Buffer | null, bytes: number | null) {
  if (head === null) return { bytes, preview: null, encoding: null, truncated: false };
  const text = head.toString('utf8');
  const printable = !/[\u0000-\u0008\u000e-\u001f\ufffd]/.test(text);
  return { bytes, preview: printable ? text : head.toString('hex'), encoding: printable ? 'utf8' : 'hex', truncated: bytes !== null && bytes > PREVIEW_BYTES };
}

/** `5m`, `30s`, `1500ms`, `2h`, `1d` → milliseconds. */
export function parseDuration(raw: string, name: string): number {
  const match = /^(\d{1,9})(ms|s|m|h|d)$/.exec(raw);
  if (!match) throw new OutboxError('INVALID_ARGUMENT', `--${name} must be a duration such as 30s, 5m, 2h or 1d, got ${JSON.stringify(raw.slice(0, 40))}`);
  const unit = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 }[match[2] as 'ms' | 's' | 'm' | 'h' | 'd'];
  const ms = Number(match[1]) * unit;
  if (ms > 3_650 * 86_400_000) throw new OutboxError('INVALID_ARGUMENT', `--${name} must be at most 3650d, got ${raw}`);
  return ms;
}


interface StuckRow {
  id: string;
  topic: string;
  key: string | null;
  state: string;
  held: boolean;
  attempts: number;
  last_error: string | null;
  created_at: Date;
  next_attempt_at: Date;
  age_seconds: number;
  blocked_by: string | null;
}

function heldBack(r: StuckRow): string {
  if (r.state === 'dead') return `dead after ${r.attempts} attempt(s): ${r.last_error ?? 'no error recorded'}`;
  if (r.blocked_by !== null) return `waits for row ${r.blocked_by}, an earlier failed or dead row of its key`;
  if (r.state === 'failed') return `failed, next attempt at ${r.next_attempt_at.toISOString()}: ${r.last_error ?? 'no error recorded'}`;
  if (r.held) return 'held behind its key; released by the relay shortly';
  return 'nothing in the database: is a relay of the serving group running and holding its shard?';
}

export interface StuckFilter {
  olderThanMs: number;
  state: string | null;
  topic: string | null;
  key: string | null;
  limit: number;
}

/** Rows that should have gone and did not, oldest first, with what holds each back (`outbox-relay stuck`, `GET /api/stuck`). */
export async function collectStuck(pool: pg.Pool, q: string, f: StuckFilter) {
  const { rows } = await pool.query<StuckRow>(stuckRowsSql(q), [f.olderThanMs, f.state, f.topic, f.key, f.limit]);
  if (rows.length === 0 && f.topic !== null) await assertKnownTopic(pool, q, f.topic);
  if (rows.length === 0 && f.key !== null) await assertUnsentKey(pool, q, f.key);
  return rows.map((r) => ({
    id: r.id,
    topic: r.topic,
    key: r.key,
    state: r.state,
    held: r.held,
    attempts: r.attempts,
    lastError: r.last_error,
    createdAt: r.created_at.toISOString(),
    ageSeconds: Math.round(r.age_seconds),
    blockedBy: r.blocked_by,
    heldBack: heldBack(r),
  }));
}

/** One row in full with a payload preview (`outbox-relay show`, `GET /api/rows/:id`); undefined when there is none. */
export async function readRow(pool: pg.Pool, q: string, id: string) {
  const { rows } = await pool.query(showRowSql(q), [id, PREVIEW_BYTES]);
  const r = rows[0];
  if (!r) return undefined;
  return {
    id: r.id as string,
    topic: r.topic as string,
    key: r.key as string | null,
    state: r.state as string,
    held: r.held as boolean,
    attempts: r.attempts as number,
    lastError: r.last_error as string | null,
    /** The last failed attempts, oldest first: when, which attempt, the error. */
    errors: r.errors as Array<{ at: string; attempt: number; error: string }>,
    createdAt: (r.created_at as Date).toISOString(),
    nextAttemptAt: (r.next_attempt_at as Date).toISOString(),
    sentAt: (r.sent_at as Date | null)?.toISOString() ?? null,
    kafka: r.kafka_partition === null ? null : { partition: r.kafka_partition as number, offset: r.kafka_offset as string },
    eventType: r.event_type as string | null,
    aggregateType: r.aggregate_type as string | null,
    aggregateId: r.aggregate_id as string | null,
    schemaVersion: r.schema_version as number | null,
    traceparent: r.traceparent as string | null,
    headers: r.headers as Record<string, string>,
    claimCheck: (r.headers as Record<string, string>)[CLAIM_CHECK_HEADER] !== undefined,
    payload: preview(r.payload_head as Buffer | null, r.payload_bytes as number | null),
  };
}

export interface DeadLetterFilter {
  group: string;
  topic: string | null;
  /** Replayed and discarded ones too. */
  all: boolean;
  limit: number;
}

/** A dead letter's state, in the words `dead-letters list` prints. */
function deadLetterState(r: { replayed_at: unknown; discarded_at: unknown; replay_requested_at: unknown }) {
  return r.replayed_at ? 'replayed' : r.discarded_at ? 'discarded' : r.replay_requested_at ? 'replay requested' : 'pending';
}

/**
 * NOT_FOUND unless the outbox holds a row of `topic`: a misspelt topic filter is bad input,
 * not an empty answer. Asked only when the filter matched nothing (see knownTopicSql).
 */
export async function assertKnownTopic(pool: Queryable, q: string, topic: string): Promise<void> {
  const { rows } = await pool.query<{ known: boolean }>(knownTopicSql(q), [topic]);
  if (!rows[0]?.known) throw new OutboxError('NOT_FOUND', `no outbox row has topic ${JSON.stringify(topic)}: check its name (outbox-relay status lists the topics with unsent rows)`);
}

/**
 * NOT_FOUND unless an unsent row has `key`: a key filter that matched nothing names a key
 * with nothing waiting (every row of it sent or skipped) or a misspelt one. Filters are
 * bound parameters, so SQL in a key is only a key no row has.
 */
export async function assertUnsentKey(pool: Queryable, q: string, key: string): Promise<void> {
  const { rows } = await pool.query<{ known: boolean }>(unsentKeySql(q), [key]);
  if (!rows[0]?.known) throw new OutboxError('NOT_FOUND', `no unsent row has key ${JSON.stringify(key.slice(0, 200))}: nothing of it waits (or the key is misspelt)`);
}

/** NOT_FOUND unless the consumer group has stored offsets or dead letters here. */
export async function assertKnownGroup(pool: pg.Pool, q: string, group: string): Promise<void> {
  const { rows } = await pool.query<{ known: boolean }>(knownGroupSql(q), [group]);
  if (!rows[0]?.known) throw new OutboxError('NOT_FOUND', `no consumer group ${JSON.stringify(group)} here: no stored offsets and no dead letters`);
}

/**
 * A consumer group's dead letters, newest first: what `dead-letters list --json` prints and
 * `GET /api/dead-letters` answers. An unknown group (no stored offsets, no dead letters) is
 * NOT_FOUND.
 */
export async function listDeadLetters(pool: pg.Pool, q: string, f: DeadLetterFilter) {
  await assertKnownGroup(pool, q, f.group);
  const { rows } = await pool.query(listDeadLettersSql(q), [f.group, f.topic, f.all, f.limit]);
  if (rows.length === 0 && f.topic !== null) {
    const { rows: known } = await pool.query<{ known: boolean }>(knownGroupTopicSql(q), [f.group, f.topic]);
    if (!known[0]?.known) throw new OutboxError('NOT_FOUND', `consumer group ${JSON.stringify(f.group)} has no offsets and no dead letters of topic ${JSON.stringify(f.topic)}`);
  }
  return rows.map((r) => ({ ...r, state: deadLetterState(r) }));
}
