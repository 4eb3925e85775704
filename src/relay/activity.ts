/**
 * What the dashboard charts: this relay's recent history, in memory and bounded. A sample
 * every few seconds (records published so far, the outbox's unsent rows by state, the
 * oldest unsent age) and, for the partition histogram, records published per topic and
 * partition in the last minute, in 5 s buckets. Nothing here is per row or per key.
 */
export interface ActivitySample {
  /** ms since the epoch */
  t: number;
  /** Records this relay committed to Kafka since it started. */
  published: number;
  pending: number;
  failed: number;
  dead: number;
  oldestSeconds: number;
}

export interface ActivitySnapshot {
  samples: ActivitySample[];
  /** Records published in the last `windowSeconds`, by topic and partition. */
  partitions: Array<{ topic: string; partition: number; records: number }>;
  windowSeconds: number;
}

const BUCKET_MS = 5_000;
const BUCKETS = 12;
/** 15 minutes of samples at the HTTP server's 2 s cadence. */
const MAX_SAMPLES = 450;

export class RelayActivity {
  private published = 0;
  private readonly samples: ActivitySample[] = [];
  private readonly buckets: Array<{ start: number; counts: Map<string, number> }> = [];

  /** Counts records of one committed transaction, by partition. */
  recordPublished(topics: readonly string[], partitions: readonly number[], now = Date.now()): void {
    this.published += partitions.length;
    const start = now - (now % BUCKET_MS);
    let bucket = this.buckets.at(-1);
    if (bucket?.start !== start) {
      bucket = { start, counts: new Map() };
      this.buckets.push(bucket);
      while (this.buckets.length > BUCKETS) this.buckets.shift();
    }
    partitions.forEach((partition, i) => {
      const key = `${partition}\u0000${topics[i]}`;
      bucket.counts.set(key, (bucket.counts.get(key) ?? 0) + 1);
    });
  }

  sample(outbox: Omit<ActivitySample, 't' | 'published'>, now = Date.now()): void {
    this.samples.push({ t: now, published: this.published, ...outbox });
    if (this.samples.length > MAX_SAMPLES) this.samples.shift();
  }

  snapshot(now = Date.now()): ActivitySnapshot {
    const since = now - BUCKET_MS * BUCKETS;
    const totals = new Map<string, number>();
    for (const bucket of this.buckets) {
      if (bucket.start < since) continue;
      for (const [key, n] of bucket.counts) totals.set(key, (totals.get(key) ?? 0) + n);
    }
    const partitions = [...totals].map(([key, records]) => {
      const cut = key.indexOf('\u0000');
      return { topic: key.slice(cut + 1), partition: Number(key.slice(0, cut)), records };
    });
    partitions.sort((a, b) => a.topic.localeCompare(b.topic) || a.partition - b.partition);
    return { samples: [...this.samples], partitions, windowSeconds: (BUCKET_MS * BUCKETS) / 1000 };
  }
}
