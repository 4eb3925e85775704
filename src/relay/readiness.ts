import type pg from 'pg';
import type { KafkaAdmin } from '../kafka/admin.js';
import { readinessSql } from '../sql/shard-leases.js';
import type { ResolvedRelayOptions } from './options.js';

/** How long each of readiness's questions may take. */
const ANSWER_MS = 2_000;

function withinAnswerTime<T>(p: Promise<T>, what: string): Promise<T> {
  return Promise.race([p, new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`${what}: no answer in 2 s`)), ANSWER_MS).unref())]);
}

/**
 * Why a started relay is not ready, if it is not (`GET /readyz`): the schema went below the
 * migration it needs, its group no longer serves the outbox, its own heartbeat in the group
 * is older than a lease, or the database or the brokers do not answer in time.
 */
export async function notReadyBecause(pool: pg.Pool, admin: KafkaAdmin, o: ResolvedRelayOptions, latestMigration: number): Promise<string[]> {
  const reasons: string[] = [];
  const database = async () => {
    const { rows } = await pool.query<{ migrated: number | null; serving: boolean; member: boolean }>(readinessSql(o.q), [o.group, o.relayId, o.leaseMs]);
    const { migrated, serving, member } = rows[0]!;
    if ((migrated ?? 0) < latestMigration) reasons.push(`schema ${o.schema} is at migration ${migrated ?? 0}, this relay needs ${latestMigration}: run outbox-relay migrate`);
    if (!serving) reasons.push(`relay group ${o.group} no longer serves the outbox`);
    if (!member) reasons.push(`no heartbeat of this relay in its group for over ${o.leaseMs} ms`);
  };
  await withinAnswerTime(database(), 'database').catch((err: unknown) => reasons.push(`database: ${(err as Error).message}`));
  await withinAnswerTime(admin.listTopics(ANSWER_MS), 'brokers').catch((err: unknown) => reasons.push(`brokers: ${(err as Error).message}`));
  return reasons;
}
