import type { KafkaAdmin } from '../kafka/admin.js';
import type { GroupClient } from './kafka-client.js';

/**
 * Decides when a consumer that owns partitions with lag has stopped making progress.
 * librdkafka consumers can silently stop fetching (a stuck fetcher, a lost connection that
 * is never re-established); nothing fails, records just stop coming. The consumer feeds
 * this with lag and progress samples; a stall is "lag > 0 and no progress for
 * `stallTimeoutMs`", answered with the reason to log.
 */
export class StallDetector {
  private lastProgressAt: number;
  private lastPositions = new Map<string, number>();

  constructor(
    private readonly stallTimeoutMs: number,
    private readonly now: () => number = Date.now,
  ) {
    this.lastProgressAt = now();
  }

  /** Anything that shows the consumer is alive: records fetched, a batch committed, a rebalance. */
  progress(): void {
    this.lastProgressAt = this.now();
  }

  /**
   * `positions` are this consumer's next offsets, `ends` the partitions' last stable offsets.
   * Returns why the consumer is stalled, or `undefined`.
   */
  check(positions: Map<string, number>, ends: Map<string, number>): string | undefined {
    for (const [key, position] of positions) {
      if (this.lastPositions.get(key) !== position) this.progress();
    }
    this.lastPositions = new Map(positions);
    if (this.stallTimeoutMs <= 0) return undefined;
    const lagging = [...positions].filter(([key, position]) => (ends.get(key) ?? 0) > position);
    const idleMs = this.now() - this.lastProgressAt;
    if (lagging.length === 0 || idleMs < this.stallTimeoutMs) return undefined;
    const detail = lagging.map(([key, position]) => `${key} at ${position} of ${ends.get(key)}`).join(', ');
    return `no progress for ${Math.round(idleMs / 1000)} s while lag > 0 (${detail})`;
  }
}

/**
 * Positions and last stable offsets of the given partitions. The position is the larger of
 * the stored next offset and librdkafka's fetch position: the latter moves past the commit
 * markers of Kafka transactions, so a caught-up partition shows no lag.
 */
export async function sampleLag(
  admin: KafkaAdmin,
  client: GroupClient,
  partitions: { topic: string; partition: number; expected: number | undefined }[],
): Promise<{ positions: Map<string, number>; ends: Map<string, number> }> {
  const positions = new Map<string, number>();
  const ends = new Map<string, number>();
  const fetched = client.positions(partitions.map((p) => ({ topic: p.topic, partition: p.partition })));
  for (const topic of new Set(partitions.map((p) => p.topic))) {
    const mine = partitions.filter((p) => p.topic === topic);
    const end = await admin.endOffsets(topic, mine.map((p) => p.partition), { committed: true });
    for (const p of mine) {
      const k = `${topic}:${p.partition}`;
      ends.set(k, end.get(p.partition) ?? 0);
      positions.set(k, Math.max(p.expected ?? 0, fetched.get(k) ?? 0));
    }
  }
  return { positions, ends };
}
