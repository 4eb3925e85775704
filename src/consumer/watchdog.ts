import { sleep } from '../async.js';
import type { KafkaAdmin } from '../kafka/admin.js';
import type { GroupClient } from '../kafka/group-client.js';
import { createClient } from './assignment.js';
import { key } from './positions.js';
import { StallDetector } from './stall-detector.js';
import type { ConsumerState } from './state.js';

/**
 * The watchdog: every `watchdogIntervalMs` it compares the consumer's positions with the
 * partitions' last stable offsets ({@link StallDetector} judges); a stall asks the loop to
 * replace the Kafka consumer ({@link rebuild}), which it does before its next poll.
 */
export async function watch(s: ConsumerState): Promise<void> {
  // One sample at a time: ticks do not pile up behind a slow answer.
  if (s.closing || !s.watchAdmin || !s.client || s.rebuildReason !== undefined || s.watching) return;
  s.watching = true;
  try {
    await sampleAndJudge(s, s.watchAdmin, s.client);
  } finally {
    s.watching = false;
  }
}

async function sampleAndJudge(s: ConsumerState, admin: KafkaAdmin, client: GroupClient): Promise<void> {
  const states = [...s.partitions.values()].filter((p) => !p.blocked);
  try {
    const { positions, ends } = await sampleLag(admin, client, states);
    const stored = new Map(states.filter((p) => p.expected !== undefined).map((p) => [key(p.topic, p.partition), p.expected!] as const));
    const reason = s.detector.check(positions, ends, stored);
    if (reason !== undefined && !s.closing) {
      // Where the loop is: a rebuild is served by the loop, so one stuck elsewhere shows here.
      const loop = { phase: s.phase.name, forMs: Date.now() - s.phase.since };
      s.logger.warn({ reason, loop }, 'consumer stalled; rebuilding the Kafka consumer');
      s.rebuildReason = reason;
    }
  } catch (err) {
    s.logger.debug({ err }, 'watchdog could not read end offsets');
  }
}

/** Replaces the Kafka consumer: leaves the group, joins again, offsets come from PostgreSQL as always. */
export async function rebuild(s: ConsumerState): Promise<void> {
  const reason = s.rebuildReason!;
  const old = s.client;
  s.client = undefined;
  s.partitions.clear();
  s.pending = [];
  s.rebalances = [];
  // The client being replaced may be the wedged one: do not wait for it forever.
  await Promise.race([old?.disconnect(), sleep(10_000, s.abort.signal)]);
  s.client = await createClient(s);
  s.rebuildReason = undefined;
  s.detector = new StallDetector(s.options.stallTimeoutMs);
  s.events.emit('rebuilt', { reason });
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
