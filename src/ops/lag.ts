import { KafkaAdmin } from '../kafka/admin.js';
import type { KafkaConnection } from '../kafka/config.js';
import { recordsWaiting } from '../kafka/visible.js';

/** How long one probe round waits to learn whether records lie between stored offsets and the log end. */
const LAG_PROBE_MS = 2_000;

export interface StoredPosition {
  topic: string;
  partition: number;
  /** The consumer's stored next offset. */
  stored: number;
}

export interface Lag {
  /** The partition's last stable offset. */
  endOffset: number;
  /**
   * Offsets from the stored one to the end; 0 when only transaction markers and aborted
   * records lie there; null when the stored offset is past the end (a log it does not belong to).
   */
  lag: number | null;
  /** Whether a committed record lies in that range; null when the probe did not tell in time. */
  recordsWaiting: boolean | null;
}

export const lagKey = (p: StoredPosition) => `${p.topic}:${p.partition}:${p.stored}`;

/**
 * Consumer lag of stored positions (`status`, `offsets show`): the log end (last stable
 * offset) of each partition, one request per topic, and, where the end is past the stored
 * offset, a read_committed probe of whether any record lies between (see recordsWaiting):
 * a consumer past the last record of a transactional topic still sits below its end.
 * Throws when the brokers do not answer.
 */
export async function measureLag(kafka: KafkaConnection, positions: StoredPosition[]): Promise<Map<string, Lag>> {
  const admin = new KafkaAdmin(kafka);
  const ends = new Map<string, number>();
  try {
    for (const topic of new Set(positions.map((p) => p.topic))) {
      const partitions = [...new Set(positions.filter((p) => p.topic === topic).map((p) => p.partition))];
      for (const [partition, end] of await admin.endOffsets(topic, partitions, { committed: true, timeoutMs: 5_000 })) ends.set(`${topic}:${partition}`, end);
    }
  } finally {
    admin.close();
  }
  // One probe reads a partition from one offset: positions at other offsets of it wait for the next round.
  const rounds: Array<Array<{ topic: string; partition: number; from: number; end: number; key: string }>> = [];
  const seen = new Set<string>();
  for (const p of positions) {
    const end = ends.get(`${p.topic}:${p.partition}`);
    if (end === undefined || end <= p.stored || seen.has(lagKey(p))) continue;
    seen.add(lagKey(p));
    const range = { topic: p.topic, partition: p.partition, from: p.stored, end, key: lagKey(p) };
    const round = rounds.find((r) => !r.some((x) => x.topic === p.topic && x.partition === p.partition));
    if (round) round.push(range);
    else rounds.push([range]);
  }
  const waiting = new Map<string, boolean>();
  for (const round of rounds) {
    // Ranges decided before: below the last stable offset nothing changes any more.
    const open = round.filter((r) => {
      const known = decided.get(`${r.key}:${r.end}`);
      if (known !== undefined) waiting.set(r.key, known);
      return known === undefined;
    });
    if (open.length === 0) continue;
    // A probe that fails leaves its ranges undecided (their lag counted in full), not the rest.
    const answers = await recordsWaiting(kafka, open, LAG_PROBE_MS).catch(() => new Map<string, boolean>());
    for (const r of open) {
      const answer = answers.get(`${r.topic}:${r.partition}`);
      if (answer === undefined) continue;
      waiting.set(r.key, answer);
      remember(`${r.key}:${r.end}`, answer);
    }
  }
  const lags = new Map<string, Lag>();
  for (const p of positions) {
    const endOffset = ends.get(`${p.topic}:${p.partition}`);
    if (endOffset === undefined) continue;
    if (endOffset < p.stored) {
      // Stored past the log's end: a log the offset does not belong to (recreated or
      // truncated); the consumer starts it over, so nothing here says how much waits.
      lags.set(lagKey(p), { endOffset, lag: null, recordsWaiting: null });
      continue;
    }
    const records = endOffset === p.stored ? false : (waiting.get(lagKey(p)) ?? null);
    lags.set(lagKey(p), { endOffset, lag: records === false ? 0 : endOffset - p.stored, recordsWaiting: records });
  }
  return lags;
}

/** Probe answers by `topic:partition:stored:end`, kept while the process runs (bounded). */
const decided = new Map<string, boolean>();
const MAX_DECIDED = 10_000;

function remember(key: string, answer: boolean): void {
  decided.set(key, answer);
  if (decided.size > MAX_DECIDED) decided.delete(decided.keys().next().value!);
}
