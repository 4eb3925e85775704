import type { KafkaAdmin } from '../kafka/admin.js';
import type { Logger } from '../log.js';

const FOUND_TTL_MS = 5 * 60_000;
const MISSING_TTL_MS = 5_000;

interface Entry {
  exists: boolean;
  partitions: number;
  replicationFactor: number;
  error: string | undefined;
  checkedAt: number;
}

/**
 * Which topics exist, from broker metadata, cached. Rows for a missing topic fail fast
 * with a clear error instead of waiting out librdkafka's metadata propagation timeout
 * inside a transaction. Missing topics are re-checked after a few seconds, so a topic
 * created later is picked up without a restart.
 */
export class TopicCache {
  private readonly entries = new Map<string, Entry>();

  constructor(private readonly admin: KafkaAdmin) {}

  /**
   * Like {@link lookup}, but topics cached as missing are asked again at once: before a
   * row is failed for its topic, which an operator may just have created.
   */
  async lookupFresh(topics: Iterable<string>): Promise<Map<string, Entry>> {
    for (const t of new Set(topics)) if (this.entries.get(t)?.exists === false) this.entries.delete(t);
    return this.lookup(topics);
  }

  async lookup(topics: Iterable<string>): Promise<Map<string, Entry>> {
    const now = Date.now();
    const stale = [...new Set(topics)].filter((t) => {
      const e = this.entries.get(t);
      return !e || now - e.checkedAt > (e.exists ? FOUND_TTL_MS : MISSING_TTL_MS);
    });
    if (stale.length > 0) {
      const described = await this.admin.describeTopics(stale);
      for (const d of described) {
        this.entries.set(d.name, {
          exists: !d.error,
          partitions: d.partitions?.length ?? 0,
          replicationFactor: Math.min(...(d.partitions ?? []).map((p) => p.replicas.length)),
          error: d.error ? `${d.error.message} (code ${d.error.code})` : undefined,
          checkedAt: now,
        });
      }
    }
    return new Map([...new Set(topics)].map((t) => [t, this.entries.get(t)!] as const).filter(([, e]) => e !== undefined));
  }
}

export interface TopicReport {
  missing: string[];
  unsafe: Array<{ topic: string; problem: string }>;
}

/**
 * Start-up check of the topics the outbox writes to: missing topics, and settings that
 * can lose acknowledged writes. Replication factor comes from broker metadata;
 * min.insync.replicas and unclean leader election are broker/topic configs that the
 * client library cannot read, so the operator is reminded of them once.
 */
export async function checkTopics(cache: TopicCache, topics: string[], logger: Logger): Promise<TopicReport> {
  const report: TopicReport = { missing: [], unsafe: [] };
  if (topics.length === 0) return report;
  const entries = await cache.lookup(topics);
  for (const topic of topics) {
    const entry = entries.get(topic);
    if (!entry?.exists) {
      report.missing.push(topic);
      continue;
    }
    if (entry.replicationFactor < 3) {
      report.unsafe.push({ topic, problem: `replication factor ${entry.replicationFactor} < 3: a broker loss can lose acknowledged records` });
    }
  }
  if (report.missing.length > 0) logger.warn({ topics: report.missing }, 'outbox rows target topics that do not exist');
  for (const u of report.unsafe) logger.warn({ topic: u.topic, problem: u.problem }, 'topic settings can lose data');
  if (report.unsafe.length > 0 || topics.length > 0) {
    logger.info('make sure target topics have min.insync.replicas >= 2 and unclean.leader.election.enable=false');
  }
  return report;
}
