import { failureDelay, forEachLimit, sleep } from '../async.js';
import { applyRecords } from './apply.js';
import { serveRebalances } from './assignment.js';
import { PartitionRevoked, PollDeadline, type ApplyContext } from './batch.js';
import { pollMarginMs } from './options.js';
import { key, type PartitionState } from './positions.js';
import { toConsumedRecord, type ConsumedRecord } from './record.js';
import { checkStoredOffsets, serveSeeksAndUnblocks, settle, verifyPosition } from './settle.js';
import { enter, type ConsumerState } from './state.js';
import { rebuild } from './watchdog.js';

/** SQLSTATE lock_not_available: a lock wait ran past `lockTimeoutMs`. */
const LOCK_NOT_AVAILABLE = '55P03';

/**
 * The consume loop: between two polls it serves a rebuild the watchdog asked for,
 * rebalances, seeks and unblocks; then it applies what the poll fetched, one transaction
 * per partition (apply.ts), and now and then checks the stored offsets. Runs until stop().
 */
export async function runLoop(s: ConsumerState): Promise<void> {
  let failures = 0;
  while (!s.closing) {
    try {
      enter(s, 'rebuild');
      if (s.rebuildReason !== undefined) await rebuild(s);
      enter(s, 'rebalance');
      await serveRebalances(s);
      enter(s, 'seek');
      await serveSeeksAndUnblocks(s);
      // Always poll, even with records left over: the poll keeps this member in the group
      // (max.poll.interval.ms) and serves rebalances. Left-overs come first, in order.
      // Records are waiting: do not wait for more. Unless the assignment is lost: then wait
      // for the rebalance to arrive instead of spinning.
      const waiting = s.pending.length > 0 && !assignmentLost(s);
      enter(s, 'poll');
      const fetched = await s.client!.consume(s.options.batchSize, waiting ? 0 : undefined);
      s.lastPollAt = Date.now();
      if (s.rebalances.length > 0) {
        // This poll delivered a rebalance: what it fetched, and what was left over, belongs
        // to the old assignment. The new one starts from the stored offsets.
        await serveRebalances(s);
        continue;
      }
      const records = [...s.pending.splice(0), ...fetched.map(toConsumedRecord)];
      // Stopping: what was just fetched is left, unapplied, to the next owner.
      if (s.closing) break;
      if (records.length > 0) s.detector.fetched(new Set(records.map((r) => key(r.topic, r.partition))));
      enter(s, 'apply');
      await applyFetch(s, records);
      enter(s, 'offset-check');
      if (Date.now() - s.lastOffsetCheck >= s.options.offsetCheckIntervalMs) await checkStoredOffsets(s);
      failures = 0;
    } catch (err) {
      if (s.closing) break;
      failures++;
      const delay = failureDelay(failures, { minMs: s.options.retryMinDelayMs, maxMs: s.options.retryMaxDelayMs });
      s.logger.warn({ err, failures, retryInMs: delay }, 'consume loop error; retrying');
      s.events.emit('error', { error: err, failures });
      enter(s, 'backoff');
      await sleep(delay, s.abort.signal);
    }
  }
}

/**
 * Applies one fetch: one transaction per partition, at most `partitionConcurrency` at a
 * time (each holds a pool connection; more would queue in the pool and time out).
 */
async function applyFetch(s: ConsumerState, records: ConsumedRecord[]): Promise<void> {
  const groups = new Map<string, ConsumedRecord[]>();
  const suspects = new Set<PartitionState>();
  for (const record of records) {
    const k = key(record.topic, record.partition);
    const state = s.partitions.get(k);
    if (!state || state.blocked || state.seekTo !== undefined) continue;
    if (state.expected !== undefined && record.offset < state.expected) {
      // librdkafka moved the position back by itself: it found its position out of range
      // (a recreated or truncated log). Never silently dropped: checked below.
      suspects.add(state);
      continue;
    }
    const list = groups.get(k) ?? [];
    list.push(record);
    groups.set(k, list);
  }
  const failures: unknown[] = [];
  const ids = groups.size === 0 ? undefined : topicIdsOf(s, [...new Set([...groups.values()].map((list) => list[0]!.topic))]);
  // Rotated each fetch, so that above the cap the same partitions do not always go first.
  const ordered = [...groups];
  const first = ordered.length === 0 ? 0 : s.rotation++ % ordered.length;
  await forEachLimit([...ordered.slice(first), ...ordered.slice(0, first)], s.concurrency, async ([k, list]) => {
    const state = s.partitions.get(k)!;
    if (suspects.has(state)) return;
    const failed = (err: unknown): void => {
      if (err instanceof PollDeadline) return;
      if (err instanceof PartitionRevoked) {
        s.counters.batchesAborted.inc({ group: s.options.groupId, reason: 'revoked' });
        state.logger.warn({ err }, 'batch aborted: the partition was lost while it ran; nothing of it committed');
        s.events.emit('aborted', { topic: state.topic, partition: state.partition, reason: 'revoked' });
      } else if ((err as { code?: unknown } | null)?.code === LOCK_NOT_AVAILABLE) {
        // The former owner's batch still holds the offset row: try again after the next
        // poll, without backing off (the lock wait itself paces the retries).
        state.logger.debug('offset row still locked by a former owner; retrying');
      } else failures.push(err);
    };
    try {
      const outcome = await applyRecords(applyContext(s, state, ids), list, state.expected);
      await settle(s, state, outcome);
      if (outcome.kind === 'stale') {
        suspects.add(state);
        return;
      }
      if (outcome.kind !== 'committed') return;
      // Cut short (poll deadline, or a later part failed): the rest comes after the next poll.
      if (!s.closing) s.pending.push(...list.filter((r) => r.offset >= outcome.next));
      if (outcome.interrupted !== undefined) failed(outcome.interrupted);
    } catch (err) {
      if (!s.closing) s.pending.push(...list);
      failed(err);
    }
  });
  for (const state of suspects) await verifyPosition(s, state);
  if (failures.length > 0) throw failures[0];
}

/**
 * Topic ids of the fetch's topics, asked while its batches run. A failed lookup does not
 * hold batches up (the periodic check still runs): it answers "unknown".
 */
function topicIdsOf(s: ConsumerState, topics: string[]): Promise<Map<string, string> | undefined> {
  // Short: batches wait for the answer before they commit.
  return s.admin!.topicIds(topics, 2_000).catch((err: unknown) => {
    s.logger.debug({ err }, 'topic ids unavailable for this fetch');
    return undefined;
  });
}

function applyContext(s: ConsumerState, state: PartitionState, ids?: Promise<Map<string, string> | undefined>): ApplyContext {
  const o = s.options;
  return {
    pool: s.pool!,
    q: o.q,
    groupId: o.groupId,
    handler: o.handler,
    batchHandler: o.batchHandler,
    tracing: s.tracing,
    inbox: o.inbox,
    maxAttempts: o.maxAttempts,
    retryMinDelayMs: o.retryMinDelayMs,
    retryMaxDelayMs: o.retryMaxDelayMs,
    failurePolicy: o.failurePolicy,
    handlerTimeoutMs: o.handlerTimeoutMs,
    lockTimeoutMs: o.lockTimeoutMs,
    topicId: state.topicId,
    sameLog: async () => {
      const current = (await ids)?.get(state.topic);
      return current === undefined || state.topicId === undefined || current === state.topicId;
    },
    pollDeadline: () => pollDeadline(s),
    assignmentLost: () => assignmentLost(s),
    inFlight: s.inFlight,
    attempts: s.attempts,
    onHandlerTimeout: (record, silentLink) => {
      const reason = silentLink === undefined ? 'handler-timeout' : 'connection-silent';
      s.counters.batchesAborted.inc({ group: o.groupId, reason });
      if (silentLink === undefined) state.logger.warn({ offset: record.offset, handlerTimeoutMs: o.handlerTimeoutMs }, 'handler overran its time; its transaction was aborted');
      else state.logger.warn({ offset: record.offset, handlerTimeoutMs: o.handlerTimeoutMs, why: silentLink }, 'the connection went silent under the handler; batch aborted, retried on a new connection, no attempt charged');
      s.events.emit('aborted', { topic: state.topic, partition: state.partition, reason });
    },
    logger: state.logger,
    signal: s.abort.signal,
  };
}

/**
 * When librdkafka's max.poll.interval.ms runs out, less a margin: past it the group gives
 * this member's partitions to others, so no batch of it may still be open then.
 */
function pollDeadline(s: ConsumerState): number {
  const interval = s.options.maxPollIntervalMs;
  return s.lastPollAt + interval - pollMarginMs(interval);
}

/**
 * Every 200 ms while batches run: a member that lost its assignment (session timed out,
 * poll interval exceeded: librdkafka has left the group) aborts its open batch
 * transactions at the database at once, so it commits nothing after the new owner took
 * over and holds no lock the new owner needs.
 */
export function watchAssignment(s: ConsumerState): void {
  if (s.inFlight.size === 0 || !assignmentLost(s)) return;
  for (const connection of s.inFlight) void connection.abort('revoked');
}

/** librdkafka reports the assignment lost, or the poll interval ran out: the group has moved on. */
function assignmentLost(s: ConsumerState): boolean {
  return (s.client?.assignmentLost() ?? false) || Date.now() > s.lastPollAt + s.options.maxPollIntervalMs;
}
