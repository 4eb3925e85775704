import type pg from 'pg';
import type { KafkaConnection } from '../kafka/config.js';
import { lagKey, measureLag, type Lag } from './lag.js';
import {
  consumerOffsetsSql,
  pendingDeadLettersSql,
  relayGroupsSql,
  relayMembersSql,
  shardOwnersSql,
  unsentByShardSql,
  unsentByTopicSql,
} from '../sql/outbox-inspect.js';

/** A relay whose heartbeat is older than this is not counted as live. */
const LIVE_HEARTBEAT_SECONDS = 30;
/** Unsent rows older than this make the outbox DEGRADED. */
const DEGRADED_AGE_SECONDS = 60;

export type Status = Awaited<ReturnType<typeof collectStatus>>;

/**
 * The outbox, its relays and its consumers at a glance, with a verdict: what
 * `outbox-relay status` prints and the relay's `GET /api/status` answers. `q` is the quoted
 * schema; with `kafka` (brokers, and the TLS/SASL properties), consumer lag is measured
 * against the partitions' last stable offsets (see measureLag).
 */
export async function collectStatus(pool: pg.Pool, q: string, kafka: KafkaConnection | undefined) {
  const db = await (async () => {
    const topics = (await pool.query(unsentByTopicSql(q))).rows;
    const groups = (await pool.query(relayGroupsSql(q))).rows;
    const serving = groups.find((g) => g.active) as { relay_group: string; shards: number; successor: string | null } | undefined;
    const shards = serving ? (await pool.query(unsentByShardSql(q), [serving.shards])).rows : [];
    const owners = serving ? (await pool.query(shardOwnersSql(q), [serving.relay_group])).rows : [];
    const members = serving ? (await pool.query(relayMembersSql(q), [serving.relay_group])).rows : [];
    const offsets = (await pool.query(consumerOffsetsSql(q))).rows;
    const deadLetters = (await pool.query(pendingDeadLettersSql(q))).rows;
    return { topics, groups, serving, shards, owners, members, offsets, deadLetters };
  })();

  // Lag of the consumers' stored offsets, when the brokers answer.
  const positions = db.offsets.map((o) => ({ topic: o.topic as string, partition: o.partition as number, stored: Number(o.next_offset) }));
  let lags = new Map<string, Lag>();
  let brokerError: string | undefined;
  if (kafka && positions.length > 0) {
    try {
      lags = await measureLag(kafka, positions);
    } catch (err) {
      brokerError = (err as Error).message;
    }
  }

  const unsent = db.topics.map((t) => ({ topic: t.topic as string, state: t.state as string, rows: t.rows as number, oldestSeconds: Math.round(t.oldest_seconds) }));
  const count = (state: string) => unsent.filter((u) => u.state === state).reduce((a, u) => a + u.rows, 0);
  const oldest = Math.max(0, ...unsent.map((u) => u.oldestSeconds));
  const liveMembers = db.members.filter((m) => m.heartbeat_seconds < LIVE_HEARTBEAT_SECONDS);
  const owners = db.owners.map((o) => ({
    shard: o.shard as number,
    owner: o.live ? (o.owner as string) : null,
    since: o.live ? (o.since as Date).toISOString() : null,
    leaseExpiresAt: o.live ? (o.lease_expires_at as Date).toISOString() : null,
  }));
  type PartitionLag = { topic: string; partition: number; storedOffset: number } & { [K in keyof Lag]: Lag[K] | null };
  const consumers = new Map<string, PartitionLag[]>();
  for (const [i, o] of db.offsets.entries()) {
    const lag = lags.get(lagKey(positions[i]!));
    const list = consumers.get(o.group_id) ?? [];
    list.push({
      topic: o.topic,
      partition: o.partition,
      storedOffset: positions[i]!.stored,
      endOffset: lag?.endOffset ?? null,
      lag: lag?.lag ?? null,
      recordsWaiting: lag?.recordsWaiting ?? null,
    });
    consumers.set(o.group_id, list);
  }
  const pendingDead = new Map(db.deadLetters.map((d) => [d.group_id as string, d.pending as number]));
  for (const group of pendingDead.keys()) if (!consumers.has(group)) consumers.set(group, []);

  const stuck: string[] = [];
  const degraded: string[] = [];
  if (count('dead') > 0) stuck.push(`${count('dead')} dead row(s) hold back their keys (outbox-relay stuck --state dead)`);
  const unsentTotal = count('pending') + count('failed') + count('dead');
  if (unsentTotal > 0 && liveMembers.length === 0) stuck.push(`${unsentTotal} unsent row(s) and no live relay${db.serving ? ` of group ${db.serving.relay_group}` : ''}`);
  if (!db.serving && unsentTotal > 0) stuck.push('no relay group serves this outbox yet');
  if (count('failed') > 0) degraded.push(`${count('failed')} row(s) failed and waiting for a retry`);
  if (oldest > DEGRADED_AGE_SECONDS) degraded.push(`oldest unsent row is ${oldest} s old`);
  const unowned = owners.filter((o) => o.owner === null).length;
  if (liveMembers.length > 0 && unowned > 0) degraded.push(`${unowned} shard(s) without an owner`);
  if (db.serving?.successor) degraded.push(`group ${db.serving.relay_group} is being taken over by ${db.serving.successor}`);
  for (const [group, pending] of pendingDead) if (pending > 0) degraded.push(`consumer group ${group}: ${pending} dead letter(s) not replayed`);
  if (brokerError) degraded.push(`brokers did not answer: ${brokerError}`);
  const verdict = stuck.length > 0 ? 'STUCK' : degraded.length > 0 ? 'DEGRADED' : 'OK';
  const reason = [...stuck, ...degraded].join('; ') || 'every row is moving';

  const result = {
    verdict,
    reason,
    unsent: { pending: count('pending'), failed: count('failed'), dead: count('dead'), oldestSeconds: oldest, byTopic: unsent },
    relay: {
      group: db.serving?.relay_group ?? null,
      shards: db.serving?.shards ?? null,
      successor: db.serving?.successor ?? null,
      byShard: db.shards.map((s) => ({ shard: s.shard, pending: s.pending, failed: s.failed, dead: s.dead, oldestSeconds: Math.round(s.oldest_seconds) })),
      owners,
      members: db.members.map((m) => ({ relayId: m.relay_id, startedAt: (m.started_at as Date).toISOString(), heartbeatSeconds: Math.round(m.heartbeat_seconds), live: m.heartbeat_seconds < LIVE_HEARTBEAT_SECONDS })),
      retiredGroups: db.groups.filter((g) => g.retired_at !== null).map((g) => g.relay_group as string),
    },
    consumers: [...consumers].map(([group, partitions]) => ({ group, deadLettersPending: pendingDead.get(group) ?? 0, partitions })),
  };
  return result;
}
