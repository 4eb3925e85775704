import type pg from 'pg';
import { OutboxError } from '../errors.js';
import type { KafkaAdmin } from '../kafka/admin.js';
import type { KafkaConnection } from '../kafka/config.js';
import type { Logger } from '../log.js';
import { checkpointKey, readCheckpoints } from './checkpoint.js';
import { checkpointCursorSql } from '../sql/checkpoint-cursors.js';
import { markSentSql } from '../sql/outbox-marks.js';

export interface ReconcileTarget {
  pool: pg.Pool;
  admin: KafkaAdmin;
  connection: KafkaConnection;
  q: string;
  group: string;
  shard: number;
  checkpointTopic: string;
  /** The partition of the checkpoint topic the shard writes to. */
  partition: number;
  /** instance_id of the group: checkpoints stamped with another one are not this outbox's. */
  instanceId: string;
  timeoutMs: number;
  log: Logger;
}

export interface Reconciled {
  checkpoints: number;
  marked: number;
  /** The checkpoint topic's id now: cursors written from here on belong to this incarnation. */
  topicId: string | null;
  /** Checkpoints of another database that uses the same group name (ignored). */
  foreign: number;
}

/**
 * Marks sent the rows of every checkpoint committed after the one last applied. Called
 * after the shard's transactional id was fenced, so nothing can commit behind the end read.
 *
 * The cursor is an offset in one incarnation of the checkpoint topic. When the topic was
 * deleted and created again (another topic id, or none recorded), or the cursor lies past
 * the end, the whole partition is read: applying a checkpoint twice is harmless, skipping
 * one republishes its rows. When retention deleted checkpoints after the cursor (the log
 * starts beyond it), the rows they listed may be published twice: said loudly.
 */
export async function reconcileShard(t: ReconcileTarget): Promise<Reconciled> {
  const { rows } = await t.pool.query<{ offset: string; topic_id: string | null; partition: number | null }>(checkpointCursorSql(t.q), [
    t.group,
    t.shard,
  ]);
  const cursor = Number(rows[0]?.offset ?? -1);
  const storedId = rows[0]?.topic_id ?? null;
  const storedPartition = rows[0]?.partition ?? null;
  const topicId = (await t.admin.topicIds([t.checkpointTopic])).get(t.checkpointTopic) ?? null;
  const sameIncarnation = storedId !== null && storedId === topicId;
  if (!sameIncarnation && cursor >= 0) {
    t.log.warn(
      { storedTopicId: storedId, topicId, cursor },
      'checkpoint topic is another incarnation than the cursor was written for (deleted and created again?): reconciling from its beginning',
    );
  }
  // The cursor is an offset in the partition it was written to. When the shard now writes to
  // another one (partitions were added to the checkpoint topic), the last checkpoints may
  // still be in the old one: it is read from the cursor on, the new one from its beginning.
  const reads: Array<{ partition: number; after: number }> = [];
  if (storedPartition !== null && storedPartition !== t.partition) {
    if (sameIncarnation) reads.push({ partition: storedPartition, after: cursor });
    reads.push({ partition: t.partition, after: -1 });
  } else {
    reads.push({ partition: t.partition, after: sameIncarnation ? cursor : -1 });
  }
  const partitions = reads.map((r) => r.partition);
  const ends = await t.admin.endOffsets(t.checkpointTopic, partitions);
  const starts = await t.admin.startOffsets(t.checkpointTopic, partitions);
  let checkpoints = 0;
  let marked = 0;
  let foreign = 0;
  for (const { partition, after } of reads) {
    const end = ends.get(partition) ?? 0;
    const start = starts.get(partition) ?? 0;
    let from = after + 1 <= end ? after + 1 : 0;
    if (from < start) {
      if (after >= 0 && after + 1 < start) {
        t.log.error(
          { cursor: after, logStart: start, topic: t.checkpointTopic, partition },
          'checkpoints after the cursor were deleted by retention: rows they listed may be published again. The checkpoint topic must be compacted, never time- or size-retained',
        );
      }
      from = start;
    }
    const found = await readCheckpoints(t.connection, t.checkpointTopic, partition, checkpointKey(t.group, t.shard), from, end, t.timeoutMs);
    checkpoints += found.length;
    for (const { offset, checkpoint } of found) {
      if (checkpoint.instance !== t.instanceId) {
        // Same group name, another database: its ids are not ours. Marking them would lose rows.
        foreign += 1;
        t.log.error(
          { offset, foreignInstance: checkpoint.instance, instance: t.instanceId },
          'checkpoint topic holds checkpoints of another outbox database using this relay group name; give each database its own group',
        );
        continue;
      }
      marked += await markCheckpointSent(t.pool, t.q, {
        group: t.group,
        shard: t.shard,
        ids: checkpoint.ids,
        partitions: checkpoint.partitions,
        offsets: checkpoint.offsets,
        checkpointOffset: offset,
        checkpointPartition: partition,
        checkpointTopicId: topicId,
      });
    }
  }
  if (marked > 0) t.log.warn({ marked, checkpoints }, 'reconciled rows a previous owner committed to Kafka but did not mark');
  return { checkpoints, marked, topicId, foreign };
}

export interface CheckpointMark {
  group: string;
  shard: number;
  ids: string[];
  /** Where each row landed; null when not known (a version 2 checkpoint: see Checkpoint). */
  partitions: Array<number | null>;
  offsets: Array<number | null>;
  checkpointOffset: number;
  checkpointPartition: number;
  checkpointTopicId: string | null;
}

/** Marks a committed transaction's rows sent and moves the shard's cursor to its checkpoint; returns rows marked. */
export async function markCheckpointSent(pool: pg.Pool, q: string, m: CheckpointMark): Promise<number> {
  const { rows } = await pool.query<{ marked: number }>(markSentSql(q), [
    m.ids,
    m.partitions,
    m.offsets,
    m.group,
    m.shard,
    m.checkpointOffset,
    m.checkpointPartition,
    m.checkpointTopicId,
  ]);
  return rows[0]?.marked ?? 0;
}

export function foreignCheckpointError(): OutboxError {
  return new OutboxError('INVALID_OPTIONS', 'relay group name shared by two databases');
}
