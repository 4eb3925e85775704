/** How long a partition moved to a new log may fetch nothing while it has records (see {@link StallDetector.replaced}). */
export const REPLACED_STALL_MS = 10_000;

/**
 * Decides when a consumer that owns partitions with lag has stopped making progress on any
 * of them. librdkafka consumers can silently stop fetching (a stuck fetcher, a lost
 * connection that is never re-established); nothing fails, records just stop coming, and it
 * can happen to one partition while the others flow. Each partition therefore has its own
 * clock: a stall is "this partition has lag and made no progress for `stallTimeoutMs`",
 * answered with the reason to log. A rebalance or rebuild restarts every clock.
 */
export class StallDetector {
  private resetAt: number;
  private readonly changedAt = new Map<string, number>();
  private lastPositions = new Map<string, number>();
  /** Partitions moved to the start of a new log (topic recreated), since when; until a record of them arrives. */
  private readonly replacedAt = new Map<string, number>();

  constructor(
    private readonly stallTimeoutMs: number,
    private readonly now: () => number = Date.now,
  ) {
    this.resetAt = now();
  }

  /**
   * Progress on the given partitions (`topic:partition` keys: records fetched, a batch
   * committed), or on all of them when called without keys (a rebalance).
   */
  progress(keys?: Iterable<string>): void {
    const now = this.now();
    if (keys === undefined) {
      this.resetAt = now;
      this.replacedAt.clear();
      return;
    }
    for (const key of keys) this.changedAt.set(key, now);
  }

  /**
   * The partition's position was moved to the start of a new log (its topic was recreated
   * under the consumer). librdkafka may have been resetting its own position in the old
   * log then, and has been seen to fetch nothing more for the partition afterwards; and its
   * fetch position may still be the old log's, which hides the lag. So until a record of
   * the partition arrives ({@link fetched}), the partition is judged by its stored position
   * and stalled after {@link REPLACED_STALL_MS} (or `stallTimeoutMs` if shorter).
   */
  replaced(key: string): void {
    this.replacedAt.set(key, this.now());
  }

  /** Records of these partitions arrived. */
  fetched(keys: Iterable<string>): void {
    for (const key of keys) this.replacedAt.delete(key);
    this.progress(keys);
  }

  /**
   * `positions` are this consumer's next offsets, `ends` the partitions' last stable offsets.
   * Returns why the consumer is stalled, or `undefined`.
   */
  check(positions: Map<string, number>, ends: Map<string, number>, stored: Map<string, number> = new Map()): string | undefined {
    const now = this.now();
    for (const [key, position] of positions) {
      if (this.lastPositions.get(key) !== position) this.changedAt.set(key, now);
    }
    this.lastPositions = new Map(positions);
    if (this.stallTimeoutMs <= 0) return undefined;
    const grace = Math.min(REPLACED_STALL_MS, this.stallTimeoutMs);
    const silent = [...this.replacedAt].filter(([key, since]) => now - since >= grace && (ends.get(key) ?? 0) > (stored.get(key) ?? 0));
    if (silent.length > 0) {
      const detail = silent.map(([key]) => `${key} at ${stored.get(key) ?? 0} of ${ends.get(key)}`).join(', ');
      return `no record for ${Math.round(grace / 1000)} s after moving to the start of a recreated topic's log (${detail})`;
    }
    const idleSince = (key: string) => Math.max(this.resetAt, this.changedAt.get(key) ?? this.resetAt);
    const stalled = [...positions].filter(([key, position]) => (ends.get(key) ?? 0) > position && now - idleSince(key) >= this.stallTimeoutMs);
    if (stalled.length === 0) return undefined;
    const idleMs = Math.min(...stalled.map(([key]) => now - idleSince(key)));
    const detail = stalled.map(([key, position]) => `${key} at ${position} of ${ends.get(key)}`).join(', ');
    return `no progress for ${Math.round(idleMs / 1000)} s while lag > 0 (${detail})`;
  }
}
