import type { BatchOutcome } from './batch.js';
import type { ConsumerEvents } from './events.js';
import { key, type PartitionControl, type PartitionState } from './positions.js';
import { dropPending, type ConsumerState } from './state.js';

/**
 * What a batch's outcome does to its partition (counters, the next offset, a seek, a block),
 * and the position changes served between polls: seeks not done yet, operators' unblocks,
 * stored offsets changed under the consumer.
 */
export async function settle(s: ConsumerState, state: PartitionState, outcome: BatchOutcome): Promise<void> {
  const { topic, partition } = state;
  const group = s.options.groupId;
  if (outcome.applied > 0) s.counters.recordsApplied.inc({ group, topic }, outcome.applied);
  if (outcome.skippedBelowOffset > 0) s.counters.recordsSkipped.inc({ group, reason: 'below-offset' }, outcome.skippedBelowOffset);
  if (outcome.skipped > outcome.skippedBelowOffset) s.counters.recordsSkipped.inc({ group, reason: 'already-applied' }, outcome.skipped - outcome.skippedBelowOffset);
  if (outcome.deadLettered > 0) s.counters.deadLetters.inc({ group, topic }, outcome.deadLettered);
  if (outcome.applied + outcome.deadLettered + outcome.skipped > 0 || outcome.kind === 'committed') s.detector.progress([key(topic, partition)]);
  if (outcome.kind === 'stale') return;
  if (outcome.kind === 'moved') {
    if (outcome.fenced) {
      state.logger.warn({ stored: outcome.stored }, 'batch fenced: another consumer advanced the offset; nothing applied');
      s.events.emit('fenced', { topic, partition, stored: outcome.stored });
    }
    await seek(s, state, outcome.stored, outcome.fenced ? 'fenced' : 'stored-offset-moved');
    return;
  }
  state.expected = outcome.next;
  if (outcome.kind === 'blocked') {
    state.blocked = { offset: outcome.offset, error: outcome.error };
    s.client!.pause([{ topic, partition }]);
    s.events.emit('blocked', { topic, partition, offset: outcome.offset, error: outcome.error });
  }
  if (s.options.commitToKafka) s.client!.commitAsync([{ topic, partition, offset: outcome.next }]);
  s.events.emit('batch', { topic, partition, next: outcome.next, applied: outcome.applied, skipped: outcome.skipped, deadLettered: outcome.deadLettered });
}

/** Moves the fetch position to `offset`; until that succeeds, records of the partition are dropped. */
async function seek(s: ConsumerState, state: PartitionState, offset: number, reason: ConsumerEvents['seek']['reason']): Promise<void> {
  // Attempts carried over belong to the records at the old position (a new log may hold others at those offsets).
  for (const id of s.attempts.keys()) if (id.startsWith(`${state.topic}:${state.partition}:`)) s.attempts.delete(id);
  state.expected = offset;
  state.seekTo = offset;
  dropPending(s, state);
  try {
    await s.client!.seek(state.topic, state.partition, offset);
    state.seekTo = undefined;
    if (reason === 'offset-out-of-range') s.detector.replaced(key(state.topic, state.partition));
    state.logger.info({ offset, reason }, 'position moved to the stored offset');
    s.events.emit('seek', { topic: state.topic, partition: state.partition, offset, reason });
  } catch (err) {
    state.logger.warn({ err, offset }, 'seek failed; retrying');
  }
}

/** Seeks that failed before, tried again; then the unblocks operators asked for. */
export async function serveSeeksAndUnblocks(s: ConsumerState): Promise<void> {
  for (const state of s.partitions.values()) {
    if (state.seekTo !== undefined) await seek(s, state, state.seekTo, 'stored-offset-moved');
  }
  for (const k of s.unblockRequests.splice(0)) {
    const state = s.partitions.get(k);
    if (!state?.blocked) continue;
    if (state.blocked.stale) {
      await s.positions!.release(state, control(s));
      continue;
    }
    state.blocked = undefined;
    await seek(s, state, state.expected ?? 0, 'unblock');
    s.client!.resume([{ topic: state.topic, partition: state.partition }]);
  }
}

/** Records below the expected offset arrived although no seek asked for them: see {@link StoredPositions.verify}. */
export function verifyPosition(s: ConsumerState, state: PartitionState): Promise<void> {
  dropPending(s, state);
  return s.positions!.verify(state, control(s));
}

/** Operator changes to stored offsets, recreated topics, released blocks: see {@link StoredPositions.sweep}. */
export async function checkStoredOffsets(s: ConsumerState): Promise<void> {
  s.lastOffsetCheck = Date.now();
  // Between two polls: bounded well inside the poll interval, or a slow broker answer costs
  // the assignment. A check that times out is tried again at the next interval.
  const timeoutMs = Math.min(5_000, Math.max(1_000, Math.floor(s.options.maxPollIntervalMs / 4)));
  await s.positions!.sweep([...s.partitions.values()], control(s), timeoutMs);
}

/** What {@link StoredPositions} may do to a partition's fetch. */
function control(s: ConsumerState): PartitionControl {
  return {
    seek: (state, offset, reason) => seek(s, state, offset, reason),
    pause: (state) => s.client!.pause([{ topic: state.topic, partition: state.partition }]),
    resume: (state) => s.client!.resume([{ topic: state.topic, partition: state.partition }]),
  };
}
