import type pg from 'pg';
import { DEFAULT_SCHEMA, quoteSchema } from '../db/identifiers.js';
import { withTransaction } from '../db/transaction.js';
import { OutboxError } from '../errors.js';
import { KafkaAdmin } from '../kafka/admin.js';
import type { KafkaConnection } from '../kafka/config.js';
import { TABLE_EXISTS_SQL } from '../sql/catalog.js';
import { auditSql } from '../sql/outbox-repair.js';
import { forgetInboxSql, groupKnownSql, groupOffsetsSql, partitionOffsetsSql, rewindOffsetsSql, setOffsetsSql } from '../sql/consumer-offsets.js';

// A consumer group's offsets as an operator reads and moves them (`outbox-relay offsets`).
// A running consumer picks a change up without restart: every batch compares the stored
// offset with the one it expects, and idle partitions are checked every few seconds.

export interface StoredOffset {
  topic: string;
  partition: number;
  /** The next record the group applies. */
  nextOffset: number;
  updatedAt: Date;
}

export interface OffsetChange {
  topic: string;
  partition: number;
  /** The stored offset before, if there was one. */
  previous: number | undefined;
  next: number;
}

export interface GroupOffsetsTarget {
  /** Schema of the consumer tables. Default `outbox`. */
  schema?: string;
  group: string;
}

/** Who moves a group's offsets and why: recorded in `operator_actions` with the change, in its transaction. */
export interface OffsetsAudit {
  actor: string;
  /** 1-2000 characters. */
  reason: string;
}

/** How an offset change is made: audited (the CLI always is), or only shown (rolled back). */
export interface OffsetChangeOptions {
  audit?: OffsetsAudit;
  /** Computes the change and rolls it back: what `--dry-run` prints. */
  dryRun?: boolean;
}

/**
 * A group's stored offsets, by topic and partition (only `topic`'s, if given: possibly
 * none). NOT_FOUND when the schema has no consumer tables, or the group has stored no
 * offset at all.
 */
export async function storedOffsets(pool: pg.Pool, target: GroupOffsetsTarget & { topic?: string }): Promise<StoredOffset[]> {
  const { schema, q } = names(target);
  const table = await pool.query<{ table: string | null }>(TABLE_EXISTS_SQL, [`${q}.consumer_offsets`]);
  if (!table.rows[0]?.table) throw new OutboxError('NOT_FOUND', `schema ${schema} has no consumer_offsets table: run \`outbox-relay migrate\``);
  const { rows } = await pool.query<{ topic: string; partition: number; next_offset: string; updated_at: Date }>(groupOffsetsSql(q), [target.group, target.topic ?? null]);
  if (rows.length === 0) await assertKnownGroup(pool, q, schema, target.group);
  return rows.map((r) => ({ topic: r.topic, partition: r.partition, nextOffset: Number(r.next_offset), updatedAt: r.updated_at }));
}

/**
 * Sets the next offset of one partition of a group that has stored offsets (0 ≤ offset ≤
 * the partition's last stable offset), and forgets the group's inbox entries at or after it,
 * so the records from there on are applied again instead of skipped as duplicates.
 */
export async function setOffset(
  pool: pg.Pool,
  kafka: KafkaConnection,
  target: GroupOffsetsTarget & { topic: string; partition: number; offset: number },
  options: OffsetChangeOptions = {},
): Promise<OffsetChange[]> {
  const { q } = names(target);
  await storedOffsets(pool, target);
  return withAdmin(kafka, async (admin) => {
    await assertPartitions(admin, target.topic, [target.partition]);
    const end = (await admin.endOffsets(target.topic, [target.partition], { committed: true })).get(target.partition) ?? 0;
    if (target.offset > end) throw new OutboxError('INVALID_ARGUMENT', `offset ${target.offset} is beyond the end of ${target.topic}[${target.partition}] (${end})`);
    const change = { group: target.group, topic: target.topic, targets: new Map([[target.partition, target.offset]]), rewind: false, topicId: await topicId(admin, target.topic) };
    return applyOffsets(pool, q, change, { partition: target.partition, offset: target.offset }, options);
  });
}

/**
 * Moves every partition of a topic (or only `partition`) back to the first record at or
 * after `toTime` (the broker's offsets for times). A partition already before that point
 * is left as it is: a rewind never skips records. Forgets the inbox entries at or after
 * the new offsets, as {@link setOffset} does.
 */
export async function rewindOffsets(
  pool: pg.Pool,
  kafka: KafkaConnection,
  target: GroupOffsetsTarget & { topic: string; partition?: number; toTime: Date },
  options: OffsetChangeOptions = {},
): Promise<OffsetChange[]> {
  const { q } = names(target);
  if ((await storedOffsets(pool, target)).length === 0) {
    throw new OutboxError('NOT_FOUND', `consumer group ${JSON.stringify(target.group)} has no stored offsets for topic ${target.topic}: nothing to rewind`);
  }
  return withAdmin(kafka, async (admin) => {
    const partitions = await assertPartitions(admin, target.topic, target.partition === undefined ? undefined : [target.partition]);
    const targets = await admin.offsetsForTime(target.topic, partitions, target.toTime.getTime());
    const change = { group: target.group, topic: target.topic, targets, rewind: true, topicId: await topicId(admin, target.topic) };
    return applyOffsets(pool, q, change, { partition: target.partition ?? null, toTime: target.toTime.toISOString() }, options);
  });
}

function names(target: GroupOffsetsTarget): { schema: string; q: string } {
  const schema = target.schema ?? DEFAULT_SCHEMA;
  return { schema, q: quoteSchema(schema) };
}

async function assertKnownGroup(pool: pg.Pool, q: string, schema: string, group: string): Promise<void> {
  const known = await pool.query(groupKnownSql(q), [group]);
  if (known.rows.length === 0) throw new OutboxError('NOT_FOUND', `consumer group ${JSON.stringify(group)} has no stored offsets in schema ${schema}`);
}

async function withAdmin<T>(kafka: KafkaConnection, run: (admin: KafkaAdmin) => Promise<T>): Promise<T> {
  const admin = new KafkaAdmin(kafka);
  try {
    return await run(admin);
  } finally {
    admin.close();
  }
}

/** The topic's partitions (or `wanted`, each checked to exist). */
async function assertPartitions(admin: KafkaAdmin, topic: string, wanted: number[] | undefined): Promise<number[]> {
  const [description] = await admin.describeTopics([topic]);
  if (!description || description.error) throw new OutboxError('NOT_FOUND', `topic ${topic} does not exist`);
  const partitions = description.partitions.map((p) => p.partition).sort((a, b) => a - b);
  for (const p of wanted ?? []) {
    if (!partitions.includes(p)) throw new OutboxError('NOT_FOUND', `topic ${topic} has no partition ${p} (it has ${partitions.length})`);
  }
  return wanted ?? partitions;
}

async function topicId(admin: KafkaAdmin, topic: string): Promise<string | null> {
  return (await admin.topicIds([topic])).get(topic) ?? null;
}

interface PlannedChange {
  group: string;
  topic: string;
  targets: Map<number, number>;
  rewind: boolean;
  topicId: string | null;
}

/**
 * Writes the new offsets and forgets the inbox entries at or after them, in one
 * transaction, with the audit row when one is asked for. A rewind only moves offsets back
 * (see rewindOffsetsSql) and only the partitions that moved lose inbox entries; a set
 * writes exactly what it was given. Both record the topic's current id with the offsets.
 * A dry run rolls it all back and answers what would have changed; so does a change that
 * moves nothing (no audit row for it).
 */
function applyOffsets(pool: pg.Pool, q: string, change: PlannedChange, asked: Record<string, unknown>, options: OffsetChangeOptions): Promise<OffsetChange[]> {
  const { group, topic, targets, rewind, topicId } = change;
  const partitions = [...targets.keys()];
  const params = [group, partitions.map(() => topic), partitions, partitions.map((p) => targets.get(p)!), topicId];
  return withTransaction(
    pool,
    async (client) => {
      const before = await client.query<{ partition: number; next_offset: string }>(partitionOffsetsSql(q), [group, topic, partitions]);
      const previous = new Map(before.rows.map((r) => [r.partition, Number(r.next_offset)]));
      const { rows } = await client.query<{ partition: number; next_offset: string }>(rewind ? rewindOffsetsSql(q) : setOffsetsSql(q), params);
      const moved = [group, rows.map(() => topic), rows.map((r) => r.partition), rows.map((r) => r.next_offset), topicId];
      const forgotten = await client.query(forgetInboxSql(q), moved);
      if (options.audit && !options.dryRun && rows.length > 0) {
        await client.query(auditSql(q), [
          options.audit.actor,
          rewind ? 'offsets rewind' : 'offsets set',
          [],
          JSON.stringify({ group, topic, ...asked }),
          options.audit.reason,
          JSON.stringify({ changed: rows.length, inboxForgotten: forgotten.rowCount ?? 0 }),
        ]);
      }
      return rows.map((r) => ({ topic, partition: r.partition, next: Number(r.next_offset), previous: previous.get(r.partition) }));
    },
    // A dry run, or nothing moved: rolled back.
    { commit: (changed) => !options.dryRun && changed.length > 0 },
  );
}
