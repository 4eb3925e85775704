import type { KafkaAdmin } from '../kafka/admin.js';

/** Why a stored offset cannot be used on the partition's current log. */
export type OutOfRangeReason = 'topic-recreated' | 'beyond-log-end' | 'before-log-start';

/** The partition's current log, as the brokers report it. */
export interface PartitionLog {
  /** Topic id of the current incarnation (`undefined` when the broker reports none). */
  topicId: string | undefined;
  /** Log start offset: the earliest record still kept. */
  start: number;
  /** High watermark: one past the last record written. */
  end: number;
}

/** A stored position: the next offset to apply and the topic incarnation it was stored for. */
export interface StoredPosition {
  offset: number;
  topicId: string | null;
  /** When the row last changed (compared, never interpreted). */
  updatedAt?: string;
}

/**
 * Decides whether a stored next offset belongs to the partition's current log. Offsets are
 * kept by topic name, so after a topic is deleted and recreated (or its log truncated by an
 * unclean failover, or records deleted before they were applied) the stored value points
 * into a log that no longer exists. Using it would skip records silently: either the
 * position lies outside the log (librdkafka resets to the earliest offset, and everything
 * below the stale offset is dropped) or, worse, inside a new log that already grew past it.
 * The topic id tells incarnations apart; the log's bounds catch the rest.
 */
export function judgeStoredOffset(stored: StoredPosition, log: PartitionLog): OutOfRangeReason | undefined {
  if (stored.topicId !== null && log.topicId !== undefined && stored.topicId !== log.topicId) return 'topic-recreated';
  if (stored.offset > log.end) return 'beyond-log-end';
  if (stored.offset < log.start) return 'before-log-start';
  return undefined;
}

/** The current logs of the given partitions: topic ids, log start offsets and high watermarks. */
export async function readPartitionLogs(admin: KafkaAdmin, partitions: { topic: string; partition: number }[]): Promise<Map<string, PartitionLog>> {
  const logs = new Map<string, PartitionLog>();
  const topics = [...new Set(partitions.map((p) => p.topic))];
  if (topics.length === 0) return logs;
  const ids = await admin.topicIds(topics);
  for (const topic of topics) {
    const numbers = partitions.filter((p) => p.topic === topic).map((p) => p.partition);
    const [starts, ends] = await Promise.all([admin.startOffsets(topic, numbers), admin.endOffsets(topic, numbers)]);
    for (const partition of numbers) {
      logs.set(`${topic}:${partition}`, { topicId: ids.get(topic), start: starts.get(partition) ?? 0, end: ends.get(partition) ?? 0 });
    }
  }
  return logs;
}
