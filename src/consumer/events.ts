import type { SafeEmitter } from '../events.js';

/** Typed events of a {@link Consumer}; for metrics, dashboards and tests. */
export interface ConsumerEvents {
  /** A batch of one partition committed (effects + next offset). */
  batch: { topic: string; partition: number; next: number; applied: number; skipped: number; deadLettered: number };
  /** Partitions assigned, with the offsets read from PostgreSQL (`null`: no stored offset). */
  assigned: { partitions: { topic: string; partition: number; offset: number | null }[] };
  revoked: { partitions: { topic: string; partition: number }[] };
  /** The stored offset was not where this consumer was: nothing applied, position moved to it. */
  seek: { topic: string; partition: number; offset: number; reason: 'stored-offset-moved' | 'fenced' | 'unblock' | 'offset-out-of-range' };
  /** This consumer's batch was refused at commit because another consumer advanced the offset (zombie fencing). */
  fenced: { topic: string; partition: number; stored: number };
  /** `block` policy: the partition is paused at `offset`. */
  blocked: { topic: string; partition: number; offset: number; error: string };
  /** The watchdog rebuilt the Kafka consumer. */
  rebuilt: { reason: string };
  /**
   * A stored offset belongs to another incarnation of the partition's log (topic recreated,
   * log truncated, records deleted before they were applied). `action` says what followed:
   * `earliest` (the partition starts over at `logStart`) or `block`.
   */
  offsetOutOfRange: {
    topic: string;
    partition: number;
    stored: number;
    storedTopicId: string | null;
    topicId: string | null;
    logStart: number;
    logEnd: number;
    reason: 'topic-recreated' | 'beyond-log-end' | 'before-log-start';
    action: 'earliest' | 'block';
  };
  /**
   * A batch transaction was aborted at the database: its handler overran `handlerTimeoutMs`
   * (`handler-timeout`, charged to the record), its connection went silent under the handler
   * (`connection-silent`, retried uncharged), or the partition was lost (`revoked`).
   */
  aborted: { topic: string; partition: number; reason: 'handler-timeout' | 'connection-silent' | 'revoked' };
  /** Inbox retention ran; `deleted` rows went. */
  inboxPurged: { deleted: number };
  /** The consume loop failed (database or broker down, …) and retries after a backoff. */
  error: { error: unknown; failures: number };
}

export type ConsumerEventName = keyof ConsumerEvents;

/** The consumer's events (`consumer.on`): listeners that throw are logged, never break the consume loop. */
export type ConsumerEmitter = SafeEmitter<ConsumerEvents>;
