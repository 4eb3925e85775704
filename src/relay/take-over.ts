import type pg from 'pg';
import { withTransaction } from '../db/transaction.js';
import { OutboxError } from '../errors.js';
import type { KafkaAdmin } from '../kafka/admin.js';
import { TransactionalProducer } from '../kafka/producer.js';
import type { Logger } from '../log.js';
import { sleep } from '../async.js';
import type { ResolvedRelayOptions } from './options.js';
import { reconcileShard } from './reconcile.js';
import {
  activateGroupSql,
  groupActivitySql,
  releaseGroupShardsSql,
  retireGroupSql,
  takeOverLockSql,
  takeOverUnlockSql,
  nameSuccessorSql,
} from '../sql/relay-take-over.js';
import { activeGroupSql, readGroupSql } from '../sql/relay-groups.js';

export interface TakeOverContext {
  pool: pg.Pool;
  admin: KafkaAdmin;
  options: ResolvedRelayOptions;
  log: Logger;
  signal: AbortSignal;
  /** Counts the checkpoints applied (relay_checkpoints_reconciled_total), as a shard's own reconcile does. */
  onCheckpoints: (checkpoints: number) => void;
}

/** How often the wait for the old group's relays to leave says what it waits for. */
const WAIT_LOG_INTERVAL_MS = 5_000;

/**
 * Moves an outbox from relay group `from` to this relay's group, with nothing published
 * twice and no key reordered:
 *   1. names this group `from`'s successor: `from`'s relays can no longer take or renew
 *      leases, and leave at their next lease tick;
 *   2. waits until `from` has no live relay and no unexpired lease (a paused relay's lease
 *      runs out; its transaction is dealt with by 3);
 *   3. initialises a producer under each of `from`'s transactional ids: this fences every
 *      former producer and settles the transaction each left open;
 *   4. applies `from`'s checkpoints committed after its cursors (rows committed to Kafka
 *      but not marked), as a new owner of each of its shards would;
 *   5. in one transaction: `from` retired, this group active, `from`'s leases void.
 * Relays of this group starting together queue on an advisory lock; the first does the
 * work, the others find this group active. A take-over interrupted anywhere is resumed by
 * the next relay started with the same `takeOverFrom`: every step can be repeated.
 * Returns the rows reconciled, or undefined when another relay of this group did it.
 */
export async function takeOverGroup(ctx: TakeOverContext, from: string): Promise<number | undefined> {
  const { pool, options: o, log } = ctx;
  const lock = await pool.connect();
  // Held through the wait: losing it (and with it the lock) fails this take-over, which a restart resumes.
  let lost: Error | undefined;
  const onError = (err: Error) => (lost = err);
  lock.on('error', onError);
  try {
    // Polled, not waited for: the first relay may hold the lock for as long as the old group
    // takes to leave, longer than any statement or lock timeout.
    for (;;) {
      const { rows: active } = await pool.query<{ relay_group: string }>(activeGroupSql(o.q));
      if (active[0]?.relay_group === o.group) return undefined; // another relay of this group did it
      const { rows } = await lock.query<{ locked: boolean }>(takeOverLockSql(), [`outbox-relay take-over ${o.schema}`]);
      if (rows[0]?.locked) break;
      if (ctx.signal.aborted || lost) throw new OutboxError('STOPPED', 'relay stopped while waiting for a take-over by another relay of its group');
      await sleep(250, ctx.signal);
    }
    const { rows: active } = await pool.query<{ relay_group: string; successor: string | null }>(activeGroupSql(o.q));
    if (active[0]?.relay_group === o.group) return undefined;
    const named = await pool.query(nameSuccessorSql(o.q), [from, o.group]);
    if (named.rowCount === 0) {
      const serving = active[0];
      throw new OutboxError(
        'GROUP_CONFLICT',
        serving === undefined
          ? `cannot take over from relay group ${from}: no group serves outbox ${o.schema}`
          : serving.relay_group !== from
            ? `cannot take over from relay group ${from}: outbox ${o.schema} is served by ${serving.relay_group}; take over from that one`
            : `relay group ${from} is being taken over by ${serving.successor} already; finish that take-over first`,
      );
    }
    log.warn({ from }, 'taking over the outbox: waiting for the relays of the old group to leave');
    await waitForQuiet(ctx, from);

    const { rows } = await pool.query<{ shards: number; instance_id: string; checkpoint_topic: string }>(readGroupSql(o.q), [from]);
    const old = rows[0];
    if (!old) throw new OutboxError('GROUP_CONFLICT', `relay group ${from} is not registered in ${o.schema}`);
    const [topic] = await ctx.admin.describeTopics([old.checkpoint_topic]);
    const partitions = topic && !topic.error ? topic.partitions.length : 0;
    let reconciled = 0;
    for (let shard = 0; shard < old.shards; shard += 1) {
      if (ctx.signal.aborted) throw new OutboxError('STOPPED', 'relay stopped during a take-over; start it again to resume');
      const producer = new TransactionalProducer({
        connection: o.connection,
        transactionalId: `${from}-${shard}`,
        preset: o.preset,
        transactionTimeoutMs: o.transactionTimeoutMs,
      });
      try {
        await producer.connect(o.transactionOperationTimeoutMs);
        await producer.init(o.transactionOperationTimeoutMs);
      } finally {
        await producer.disconnect().catch(() => undefined);
      }
      if (partitions === 0) {
        const message = `the checkpoint topic ${old.checkpoint_topic} of relay group ${from} is gone: a batch it committed but did not mark would be published again`;
        if (o.strict) throw new OutboxError('TOPIC_UNSAFE', `strict mode: ${message}`);
        log.error({ from, topic: old.checkpoint_topic }, message);
        continue;
      }
      const result = await reconcileShard({
        pool,
        admin: ctx.admin,
        connection: o.connection,
        q: o.q,
        group: from,
        shard,
        checkpointTopic: old.checkpoint_topic,
        partition: shard % partitions,
        instanceId: old.instance_id,
        timeoutMs: o.transactionOperationTimeoutMs,
        log: log.child({ fromGroup: from, shard }),
      });
      reconciled += result.marked;
      ctx.onCheckpoints(result.checkpoints);
    }

    await withTransaction(pool, async (client) => {
      await client.query(retireGroupSql(o.q), [from]);
      await client.query(activateGroupSql(o.q), [o.group]);
      await client.query(releaseGroupShardsSql(o.q), [from]);
    });
    log.warn({ from, reconciled, oldShards: old.shards, shards: o.shards }, 'took over the outbox: this relay group serves it now');
    return reconciled;
  } finally {
    // Unlocking a lock this session does not hold only warns.
    if (!lost) await lock.query(takeOverUnlockSql(), [`outbox-relay take-over ${o.schema}`]).catch(() => undefined);
    lock.off('error', onError);
    lock.release(lost);
  }
}

async function waitForQuiet(ctx: TakeOverContext, from: string): Promise<void> {
  const { pool, options: o, log } = ctx;
  let lastLog = 0;
  for (;;) {
    const { rows } = await pool.query<{ live: number; leased: number }>(groupActivitySql(o.q), [from, o.leaseMs]);
    const { live, leased } = rows[0] ?? { live: 0, leased: 0 };
    if (live === 0 && leased === 0) return;
    if (Date.now() - lastLog > WAIT_LOG_INTERVAL_MS) {
      lastLog = Date.now();
      log.info({ from, liveRelays: live, unexpiredLeases: leased }, 'waiting for the old group to stop: its relays leave at their next lease tick');
    }
    if (ctx.signal.aborted) throw new OutboxError('STOPPED', 'relay stopped during a take-over; start it again to resume');
    await sleep(250, ctx.signal);
  }
}
