import type pg from 'pg';
import type { Logger } from '../log.js';
import type { ResolvedRelayOptions } from './options.js';
import { acquireLeasesSql, ensureShardsSql, heartbeatSql, leaveGroupSql, pruneMembersSql, releaseLeasesSql, renewLeasesSql } from '../sql/shard-leases.js';

export interface LeaseChanges {
  acquired: Array<{ shard: number; token: string }>;
  lost: number[];
  /** Shards to hand back to rebalance; release them with {@link ShardLeases.release} once stopped. */
  surplus: number[];
  /** False once the group no longer serves the outbox (another group takes over): leave. */
  serving: boolean;
  successor: string | null;
}

/**
 * Shard leases in PostgreSQL. Every tick a relay heartbeats, renews what it holds, and
 * aims for its fair share (ceil(shards / live relays)): it takes free or expired shards
 * when below it and hands back surplus shards when above it, so relays that join or die
 * are balanced within a few ticks.
 */
export class ShardLeases {
  private readonly held = new Map<number, string>();
  /** Shards being handed back: still held and renewed, but no longer counted or worked. */
  private readonly leaving = new Set<number>();
  private readonly sql;

  constructor(
    private readonly pool: pg.Pool,
    private readonly options: ResolvedRelayOptions,
    private readonly logger: Logger,
  ) {
    const s = options.q;
    this.sql = {
      ensure: ensureShardsSql(s),
      heartbeat: heartbeatSql(s),
      renew: renewLeasesSql(s),
      acquire: acquireLeasesSql(s),
      release: releaseLeasesSql(s),
      leave: leaveGroupSql(s),
      prune: pruneMembersSql(s),
    };
  }

  /** Shards this relay holds and works on. */
  get shards(): number[] {
    return [...this.held.keys()].filter((s) => !this.leaving.has(s)).sort((a, b) => a - b);
  }

  async init(): Promise<void> {
    await this.pool.query(this.sql.ensure, [this.options.group, this.options.shards]);
  }

  async tick(): Promise<LeaseChanges> {
    const { group, relayId, leaseMs, shards } = this.options;
    const { rows: beat } = await this.pool.query<{ live: number; serving: boolean; successor: string | null }>(this.sql.heartbeat, [
      group,
      relayId,
      leaseMs,
    ]);
    const live = Math.max(1, beat[0]?.live ?? 1);
    const serving = beat[0]?.serving ?? false;
    const successor = beat[0]?.successor ?? null;
    await this.pool.query(this.sql.prune, [group, leaseMs * 10]);

    const mine = [...this.held.entries()];
    const { rows: kept } = await this.pool.query<{ shard: number }>(this.sql.renew, [
      group,
      relayId,
      leaseMs,
      mine.map(([shard]) => shard),
      mine.map(([, token]) => token),
    ]);
    const keptSet = new Set(kept.map((r) => r.shard));
    const lost = mine.map(([shard]) => shard).filter((shard) => !keptSet.has(shard));
    for (const shard of lost) this.held.delete(shard);

    const target = Math.ceil(shards / live);
    const changes: LeaseChanges = { acquired: [], lost, surplus: [], serving, successor };
    const working = this.shards.length;
    if (working > target) {
      changes.surplus = this.shards.slice(target);
      for (const shard of changes.surplus) this.leaving.add(shard);
    } else if (working < target && this.leaving.size === 0) {
      const { rows } = await this.pool.query<{ shard: number; token: string }>(this.sql.acquire, [
        group,
        relayId,
        leaseMs,
        target - working,
        shards,
      ]);
      for (const row of rows) {
        this.held.set(row.shard, row.token);
        changes.acquired.push({ shard: row.shard, token: row.token });
      }
    }
    if (lost.length > 0) this.logger.warn({ lost }, 'shard leases lost to another relay');
    return changes;
  }

  /** Stops work on a shard (`stop`), then gives its lease back. */
  async handBack(shard: number, stop: () => Promise<void>): Promise<void> {
    try {
      await stop();
      await this.release([shard]);
    } finally {
      this.leaving.delete(shard);
    }
  }

  /** Forgets a shard whose worker found its lease gone; the next tick may acquire it afresh. */
  forget(shard: number, token: string): void {
    if (this.held.get(shard) === token) this.held.delete(shard);
  }

  async release(shards: number[]): Promise<void> {
    if (shards.length === 0) return;
    for (const shard of shards) this.held.delete(shard);
    await this.pool.query(this.sql.release, [this.options.group, this.options.relayId, shards]);
  }

  async leave(): Promise<void> {
    await this.release(this.shards);
    await this.pool.query(this.sql.leave, [this.options.group, this.options.relayId]);
  }
}
