import type { TopicPartition } from '@confluentinc/kafka-javascript';
import { GroupClient, OFFSET_BEGINNING, REBALANCE_ASSIGN } from '../kafka/group-client.js';
import { readPartitionLogs } from './incarnation.js';
import { key, type PartitionState } from './positions.js';
import type { ConsumerState } from './state.js';

/**
 * The group membership: a Kafka consumer whose rebalances are queued for the loop, and the
 * assignment served from the offsets stored in PostgreSQL (never from Kafka's).
 */
export async function createClient(s: ConsumerState): Promise<GroupClient> {
  const o = s.options;
  const client: GroupClient = new GroupClient({
    connection: s.connection,
    groupId: o.groupId,
    fromBeginning: o.fromBeginning,
    sessionTimeoutMs: o.sessionTimeoutMs,
    heartbeatIntervalMs: o.heartbeatIntervalMs,
    maxPollIntervalMs: o.maxPollIntervalMs,
    pollTimeoutMs: o.pollTimeoutMs,
    properties: o.kafkaProperties,
    onRebalance: (code, partitions) => onRebalance(s, client, code, partitions),
    onCommitError: (err) => s.logger.debug({ err }, 'kafka offset commit failed (informational only)'),
  });
  await client.connect();
  client.subscribe(o.topics);
  return client;
}

/**
 * Rebalance events are queued and served by the loop between batches, so a batch in
 * progress always finishes (or fails) before its partitions are given up, and offsets
 * are read from PostgreSQL before `assign`. While closing, or for a client the watchdog
 * replaced, revocation is served at once.
 */
function onRebalance(s: ConsumerState, client: GroupClient, code: number, partitions: TopicPartition[]): void {
  if (s.closing || client !== s.client) {
    try {
      client.unassign();
    } catch {
      // Closed already.
    }
    return;
  }
  s.rebalances.push({ client, code, partitions });
}

/** Serves the queued rebalances, oldest first; the loop calls it between batches. */
export async function serveRebalances(s: ConsumerState): Promise<void> {
  while (s.rebalances.length > 0) {
    const event = s.rebalances[0]!;
    // Records fetched before the rebalance are not retried under the new assignment.
    s.pending = [];
    if (event.client !== s.client) {
      s.rebalances.shift();
      continue;
    }
    if (event.code === REBALANCE_ASSIGN) await assign(s, event.client, event.partitions);
    else {
      event.client.unassign();
      const revoked = [...s.partitions.values()].map((p) => ({ topic: p.topic, partition: p.partition }));
      s.partitions.clear();
      if (revoked.length > 0) s.logger.info({ partitions: revoked }, 'partitions revoked');
      s.events.emit('revoked', { partitions: revoked });
    }
    s.rebalances.shift();
    s.detector.progress();
  }
}

/**
 * Reads the stored offsets, checks each against the partition's current log (see
 * {@link judgeStoredOffset}), and assigns with them: nothing is fetched from anywhere else.
 */
async function assign(s: ConsumerState, client: GroupClient, partitions: TopicPartition[]): Promise<void> {
  const positions = s.positions!;
  let stored = await positions.load(partitions);
  const unstored = partitions.filter((p) => !stored.has(key(p.topic, p.partition)));
  if (!s.options.fromBeginning && unstored.length > 0) {
    // "Start at the end" is pinned now, in PostgreSQL: were it left to librdkafka, a
    // rebalance or rebuild before the first commit would start at a later end and skip
    // what arrived in between.
    await positions.pinAtEnd(unstored);
    stored = await positions.load(partitions);
  }
  // Read after the offsets: a log's end read before them could lie behind them.
  const logs = await readPartitionLogs(s.admin!, partitions);
  const states = partitions.map((p): PartitionState => {
    const k = key(p.topic, p.partition);
    return {
      topic: p.topic,
      partition: p.partition,
      expected: stored.get(k)?.offset,
      seekTo: undefined,
      blocked: undefined,
      topicId: logs.get(k)?.topicId,
      logger: s.logger.child({ topic: p.topic, partition: p.partition }),
    };
  });
  for (const state of states) {
    const position = stored.get(key(state.topic, state.partition));
    const log = logs.get(key(state.topic, state.partition));
    if (position && log) await positions.check(state, position, log);
  }
  await positions.adoptTopicIds(states.filter((p) => !p.blocked && stored.get(key(p.topic, p.partition))?.topicId === null));
  client.assign(states.map((p) => ({ topic: p.topic, partition: p.partition, offset: p.expected ?? OFFSET_BEGINNING })));
  // A partition paused by the block policy stays paused in librdkafka across a rebalance;
  // a fresh assignment starts unblocked (unless its stored offset is stale and the policy blocks).
  client.resume(partitions.map((p) => ({ topic: p.topic, partition: p.partition })));
  const blocked = states.filter((p) => p.blocked);
  if (blocked.length > 0) client.pause(blocked.map((p) => ({ topic: p.topic, partition: p.partition })));
  s.partitions.clear();
  s.attempts.clear();
  for (const state of states) s.partitions.set(key(state.topic, state.partition), state);
  const listed = states.map((p) => ({ topic: p.topic, partition: p.partition, offset: p.expected ?? null }));
  s.logger.info({ partitions: listed }, 'partitions assigned');
  s.events.emit('assigned', { partitions: listed });
}
