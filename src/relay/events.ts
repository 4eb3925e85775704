import type { SafeEmitter } from '../events.js';

/** Events a relay emits, for metrics, dashboards and tests. */
export interface RelayEventMap {
  /**
   * One Kafka transaction committed and its rows marked sent. `phases` is where its time
   * went (ms): the claim that fed it (counted with the first transaction it fed; checking
   * topics and sizes between claim and BEGIN is in none), BEGIN, the records' delivery
   * (linger included), what was left of the checkpoint's (produced with the records), the
   * commit, the mark; `durationMs` is the
   * transaction from BEGIN to mark.
   */
  batch: { shard: number; rows: number; durationMs: number; phases: BatchPhases };
  rowFailed: { shard: number; id: string; error: string; dead: boolean };
  /** A shard worker found nothing to publish and waits for rows (a wake-up or its poll interval). */
  idle: { shard: number };
  reconciled: { shard: number; checkpoints: number; marked: number };
  shardAcquired: { shard: number; token: string };
  shardReleased: { shard: number; reason: 'rebalance' | 'lost' | 'stop' };
  /** The group was taken over by `successor`: this relay has stopped and left. */
  retired: { successor: string | null };
  /** This relay's group took over the outbox from `from` (fenced, reconciled). */
  tookOver: { from: string; reconciled: number };
  /**
   * A maintenance run of a partitioned outbox (see migrate's `partitionBy`): partitions made,
   * dropped (expired, no row to keep), `kept` with the reason (an expired partition holding
   * rows not sent or sent within the retention period; a range the default partition holds
   * rows of), and `busy` (the table's lock was not free: the run stopped there).
   */
  partitions: { created: string[]; dropped: string[]; kept: Array<{ partition: string; reason: string }>; busy: Array<{ partition: string; reason: string }> };
  error: { shard?: number; error: unknown };
}

export interface RelayEventSink {
  emit<E extends keyof RelayEventMap>(event: E, payload: RelayEventMap[E]): void;
}

/** The relay's events (`relay.events`): listeners that throw are logged, never break the relay. */
export type RelayEvents = SafeEmitter<RelayEventMap>;

/** See the `batch` event. */
export interface BatchPhases {
  claimMs: number;
  beginMs: number;
  produceMs: number;
  checkpointMs: number;
  commitMs: number;
  markMs: number;
}
