import type { TopicPartition } from '@confluentinc/kafka-javascript';
import type pg from 'pg';
import type { KafkaAdmin } from '../kafka/admin.js';
import type { Logger } from '../log.js';
import type { ConsumerEmitter, ConsumerEvents } from './events.js';
import { judgeStoredOffset, readPartitionLogs, type PartitionLog, type StoredPosition } from './incarnation.js';
import type { ConsumerMetrics } from './metrics.js';
import type { OffsetOutOfRangePolicy } from './handler.js';
import { loadOffsetsSql } from '../sql/consumer-offsets.js';
import { readOffsetSql } from '../sql/consumer-offsets.js';
import { adoptTopicIdSql, resetOffsetSql } from '../sql/consumer-offsets.js';

/** What the consumer knows of one partition it owns. */
export interface PartitionState {
  topic: string;
  partition: number;
  /** Next offset this consumer expects to apply: the stored one as last read or written. `undefined`: none stored yet. */
  expected: number | undefined;
  /** A seek that has not succeeded yet; records of the partition are dropped until it does. */
  seekTo: number | undefined;
  /** Paused: by the `block` failure policy, or by `onOffsetOutOfRange: 'block'` (then `stale` is the position judged stale). */
  blocked: { offset: number; error: string; stale?: StoredPosition } | undefined;
  /** Topic id of the log this consumer reads (as described at assignment). */
  topicId: string | undefined;
  logger: Logger;
}

export const key = (topic: string, partition: number): string => `${topic}:${partition}`;

/** What {@link StoredPositions} may do to a partition's fetch (the consumer's client and records). */
export interface PartitionControl {
  seek(state: PartitionState, offset: number, reason: ConsumerEvents['seek']['reason']): Promise<void>;
  pause(state: PartitionState): void;
  resume(state: PartitionState): void;
}

export interface StoredPositionsDeps {
  pool: pg.Pool;
  admin: KafkaAdmin;
  q: string;
  groupId: string;
  policy: OffsetOutOfRangePolicy;
  counters: ConsumerMetrics;
  events: ConsumerEmitter;
}

/**
 * The group's stored offsets in PostgreSQL and their topic incarnations: read them, pin a
 * start, and judge a stored position against the partition's current log (see
 * incarnation.ts), acting on a stale one as `onOffsetOutOfRange` says.
 */
export class StoredPositions {
  constructor(private readonly deps: StoredPositionsDeps) {}

  /**
   * A stored position judged against the partition's current log. In range: nothing to do.
   * Stale (another incarnation): reported (log, event, metric), then either the partition
   * starts over at the log's start (`earliest`; the stored offset is moved there with a
   * compare-and-set) or it is blocked (`block`) until an operator sets its offset.
   * Updates `state.expected` / `state.blocked`; returns true when the position was stale.
   */
  async check(state: PartitionState, position: StoredPosition, current: PartitionLog): Promise<boolean> {
    const { topic, partition } = state;
    let log = current;
    // A stored offset without a topic id (an older row, or one set without brokers) is a
    // position in the log this consumer has been reading: judge it as belonging to that one.
    const judged = { offset: position.offset, topicId: position.topicId ?? state.topicId ?? null };
    let reason = judgeStoredOffset(judged, log);
    if (reason === 'beyond-log-end') {
      // Records may have been committed since the log's end was read: read it again first.
      const end = (await this.deps.admin.endOffsets(topic, [partition])).get(partition) ?? log.end;
      log = { ...log, end: Math.max(end, log.end) };
      reason = judgeStoredOffset(judged, log);
    }
    if (reason === undefined) {
      state.topicId = log.topicId ?? state.topicId;
      return false;
    }
    const action = this.deps.policy;
    const report = { topic, partition, stored: position.offset, storedTopicId: position.topicId, topicId: log.topicId ?? null, logStart: log.start, logEnd: log.end, reason, action };
    state.logger.error(report, "stored offset does not belong to the partition's current log; it is not used to skip records");
    this.deps.counters.offsetOutOfRange.inc({ group: this.deps.groupId, topic, reason });
    this.deps.events.emit('offsetOutOfRange', report);
    state.topicId = log.topicId;
    if (action === 'block') {
      state.expected = position.offset;
      state.blocked = {
        offset: position.offset,
        error: `stored offset ${position.offset} does not belong to the current log of ${topic}[${partition}] (${reason}; log ${log.start}..${log.end}): set it with outbox-relay offsets set/rewind`,
        stale: position,
      };
      return true;
    }
    const { rows } = await this.deps.pool.query<{ next_offset: string }>(resetOffsetSql(this.deps.q), [
      this.deps.groupId,
      topic,
      partition,
      position.offset,
      position.topicId,
      log.start,
      log.topicId ?? null,
    ]);
    // Changed meanwhile (an operator, another member): whatever is stored now is where to go.
    state.expected = rows[0] ? Number(rows[0].next_offset) : (await this.load([state])).get(key(topic, partition))?.offset;
    return true;
  }

  /** Stored offsets without a topic id were just checked against the current log: record its id. */
  async adoptTopicIds(states: PartitionState[]): Promise<void> {
    const known = states.filter((s) => s.topicId !== undefined);
    if (known.length === 0) return;
    await this.deps.pool.query(adoptTopicIdSql(this.deps.q), [this.deps.groupId, known.map((s) => s.topic), known.map((s) => s.partition), known.map((s) => s.topicId)]);
  }

  async pinAtEnd(partitions: TopicPartition[]): Promise<void> {
    const topics = [...new Set(partitions.map((p) => p.topic))];
    const ids = await this.deps.admin.topicIds(topics);
    for (const topic of topics) {
      const numbers = partitions.filter((p) => p.topic === topic).map((p) => p.partition);
      const ends = await this.deps.admin.endOffsets(topic, numbers, { committed: true });
      for (const partition of numbers) {
        const topicId = ids.get(topic) ?? null;
        await this.deps.pool.query(readOffsetSql(this.deps.q), [this.deps.groupId, topic, partition, ends.get(partition) ?? 0, topicId]);
      }
    }
  }

  async load(partitions: { topic: string; partition: number }[]): Promise<Map<string, StoredPosition>> {
    const { rows } = await this.deps.pool.query<{ topic: string; partition: number; next_offset: string; topic_id: string | null; updated_at: string }>(loadOffsetsSql(this.deps.q), [
      this.deps.groupId,
      partitions.map((p) => p.topic),
      partitions.map((p) => p.partition),
    ]);
    return new Map(rows.map((r) => [key(r.topic, r.partition), { offset: Number(r.next_offset), topicId: r.topic_id, updatedAt: r.updated_at }]));
  }

  /**
   * Records below the expected offset arrived although no seek asked for them. Stale
   * position: handled by {@link check}. Otherwise the fetch position is put back
   * where PostgreSQL says: re-reading is always safe, skipping never is.
   */
  async verify(state: PartitionState, control: PartitionControl): Promise<void> {
    try {
      await this.judge(state, control);
    } catch (err) {
      // The records that raised the doubt were dropped: fetch from the stored offset again.
      if (state.expected !== undefined) state.seekTo = state.expected;
      throw err;
    }
  }

  private async judge(state: PartitionState, control: PartitionControl): Promise<void> {
    const k = key(state.topic, state.partition);
    const stored = await this.load([state]);
    const logs = await readPartitionLogs(this.deps.admin, [state]);
    const position = stored.get(k);
    const log = logs.get(k);
    if (position && log && (await this.check(state, position, log))) {
      if (state.blocked) control.pause(state);
      else await control.seek(state, state.expected ?? log.start, 'offset-out-of-range');
      return;
    }
    state.logger.warn({ expected: state.expected }, 'records below the stored offset arrived without a seek; fetch position reset to the stored offset');
    await control.seek(state, position?.offset ?? state.expected ?? 0, 'stored-offset-moved');
  }

  /**
   * A partition blocked on a stale offset is released once its stored position is valid on
   * the current log again (an operator ran `offsets set` / `rewind`).
   */
  async release(state: PartitionState, control: PartitionControl): Promise<void> {
    const stale = state.blocked!.stale!;
    const k = key(state.topic, state.partition);
    const position = (await this.load([state])).get(k);
    // Untouched since it was judged stale: still waiting for the operator.
    if (!position || (position.offset === stale.offset && position.topicId === stale.topicId && position.updatedAt === stale.updatedAt)) return;
    const log = (await readPartitionLogs(this.deps.admin, [state])).get(k);
    if (!log) return;
    state.blocked = undefined;
    if (await this.check(state, position, log)) return;
    state.topicId = log.topicId;
    if (position.topicId === null) await this.adoptTopicIds([state]);
    state.logger.info({ offset: position.offset }, 'stored offset set on the current log; partition released');
    await control.seek(state, position.offset, 'unblock');
    control.resume(state);
  }

  /**
   * Every `offsetCheckIntervalMs`. Idle partitions see no batch transaction, so an offset
   * set by an operator would go unnoticed until new records arrive; this periodic read
   * catches it. Batches re-check the stored offset anyway: this only shortens the time to
   * pick a change up. The same tick
   * compares topic ids: a topic recreated under the consumer's feet, which librdkafka reads
   * on from the old position, is caught here. Partitions blocked on a stale offset are
   * released once an operator has set it.
   */
  async sweep(all: PartitionState[], control: PartitionControl, timeoutMs?: number): Promise<void> {
    for (const state of all.filter((s) => s.blocked?.stale)) await this.release(state, control);
    const states = all.filter((s) => !s.blocked && s.seekTo === undefined);
    if (states.length === 0) return;
    const ids = await this.deps.admin.topicIds([...new Set(states.map((s) => s.topic))], timeoutMs);
    const recreated = states.filter((s) => s.topicId !== undefined && ids.has(s.topic) && ids.get(s.topic) !== s.topicId);
    for (const state of recreated) await this.verify(state, control);
    const rest = states.filter((s) => !recreated.includes(s));
    const stored = await this.load(rest);
    // Offsets written without a topic id (by hand, say) are positions in the log being read.
    await this.adoptTopicIds(rest.filter((s) => stored.get(key(s.topic, s.partition))?.topicId === null));
    for (const state of rest) {
      const value = stored.get(key(state.topic, state.partition))?.offset;
      if (value !== undefined && value !== state.expected) await control.seek(state, value, 'stored-offset-moved');
    }
  }
}
