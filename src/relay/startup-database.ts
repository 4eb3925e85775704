import type pg from 'pg';
import { loadMigrations } from '../db/migrate.js';
import { missingPrivileges } from '../db/privileges.js';
import { OptionsError, OutboxError } from '../errors.js';
import type { Logger } from '../log.js';
import { CURRENT_ROLE_SQL, schemaVersionSql } from '../sql/catalog.js';
import { readSourceSql } from '../sql/outbox-source.js';
import { activeGroupSql, readGroupSql, registerGroupSql } from '../sql/relay-groups.js';
import { activateIfNoneSql } from '../sql/relay-take-over.js';
import type { ResolvedRelayOptions } from './options.js';
import { isPartitioned } from './partitions.js';

// The relay's start-up checks in PostgreSQL: the schema is migrated and the role may do
// what the relay does; the group is registered and may serve the outbox; the outbox's
// source id. Each failure names its fix.

/** What the start-up checks need of the relay starting. */
export interface StartupContext {
  options: ResolvedRelayOptions;
  log: Logger;
  /** The relay's: a stop() during start-up cuts the waits short. */
  signal: AbortSignal;
}

/**
 * The schema is migrated, and the relay's role may do what the relay does there. The
 * relay makes no DDL: migrations are run by the schema's owner (outbox-relay migrate), and
 * a relay role needs only the grants of `outbox-relay roles`, checked here all at once so
 * that a missing one fails start() with its name instead of a shard later. Answers the
 * migration this relay needs (readiness checks the schema stays there).
 */
export async function checkSchema(ctx: StartupContext, pool: pg.Pool): Promise<number> {
  const o = ctx.options;
  const latest = (await loadMigrations()).at(-1)?.id ?? 0;
  let current = 0;
  try {
    const { rows } = await pool.query<{ id: number | null }>(schemaVersionSql(o.q));
    current = rows[0]?.id ?? 0;
  } catch (cause) {
    const code = (cause as { code?: string }).code;
    if (code === '42501') {
      throw new OutboxError('PERMISSION_DENIED', `${await roleOf(pool)} may not read schema ${o.schema} (${(cause as Error).message}): ${grantHint(o.schema)}`, { cause });
    }
    if (code !== '42P01' && code !== '3F000') throw cause;
  }
  if (current < latest) {
    throw new OutboxError('MIGRATION_FAILED', `schema ${o.schema} is not migrated (at ${current}, need ${latest}): run outbox-relay migrate (as the schema's owner)`);
  }
  const missing = await missingPrivileges(pool, o.schema, 'relay', { retention: o.retention !== false, partitioned: await isPartitioned(pool, o.q) });
  const required = missing.filter((m) => m.need !== 'dashboard');
  if (required.length > 0) {
    throw new OutboxError(
      'PERMISSION_DENIED',
      `${await roleOf(pool)} lacks what the relay needs on schema ${o.schema}: ${required.map((m) => `${m.privilege} (${m.why})`).join('; ')}. ${grantHint(o.schema)}`,
    );
  }
  if (missing.length > 0) {
    ctx.log.warn({ missing: missing.map((m) => m.privilege) }, "the relay's role may not read what its dashboard and /api/status show: those reads will fail");
  }
  return latest;
}

async function roleOf(pool: pg.Pool): Promise<string> {
  const { rows } = await pool.query<{ role: string }>(CURRENT_ROLE_SQL);
  return `role ${rows[0]?.role ?? '?'}`;
}

/**
 * Registers the group (its shard count is fixed at its first start) and checks that it
 * may serve the outbox: it is the active group, or it is to take over from the active one
 * (`takeOverFrom`). Returns the group's instance id and the group to take over from.
 */
export async function registerGroup(ctx: StartupContext, pool: pg.Pool): Promise<{ instanceId: string; takeOverFrom: string | undefined }> {
  const o = ctx.options;
  for (let attempt = 1; ; attempt += 1) {
    try {
      await pool.query(registerGroupSql(o.q), [o.group, o.shards, o.checkpointTopic]);
      break;
    } catch (err) {
      // Another group became active between our check and insert: register inactive.
      if ((err as { code?: string }).code !== '23505' || attempt >= 3) throw err;
    }
  }
  const { rows } = await pool.query<{
    shards: number;
    instance_id: string;
    checkpoint_topic: string;
    active: boolean;
    successor: string | null;
    retired_at: Date | null;
  }>(readGroupSql(o.q), [o.group]);
  const group = rows[0];
  if (!group) throw new OutboxError('UNKNOWN', `relay group ${o.group} could not be registered`);
  if (group.shards !== o.shards) {
    throw new OptionsError(
      `relay group ${o.group} has ${group.shards} shards; this relay was given ${o.shards}. Keys would change shards while ` +
        `batches are in flight. Use shards=${group.shards}; for a new layout, start a new group that takes over from this one ` +
        `(outbox-relay relay --group NEW --shards ${o.shards} --take-over-from ${o.group}).`,
    );
  }
  if (group.checkpoint_topic !== o.checkpointTopic) {
    throw new OptionsError(`relay group ${o.group} keeps its checkpoints in ${group.checkpoint_topic}, not ${o.checkpointTopic}`);
  }
  const instanceId = group.instance_id;
  if (group.active && group.successor !== null) {
    throw new OutboxError(
      'GROUP_CONFLICT',
      `relay group ${o.group} is being taken over by ${group.successor}: start relays of ${group.successor} ` +
        `(with --take-over-from ${o.group}) to finish the take-over`,
    );
  }
  if (group.active) return { instanceId, takeOverFrom: undefined };
  if ((await pool.query(activateIfNoneSql(o.q), [o.group])).rowCount === 1) return { instanceId, takeOverFrom: undefined };
  const { rows: active } = await pool.query<{ relay_group: string }>(activeGroupSql(o.q));
  const serving = active[0]?.relay_group;
  if (group.retired_at !== null) {
    throw new OutboxError(
      'GROUP_CONFLICT',
      `relay group ${o.group} was taken over on ${group.retired_at.toISOString()}; outbox ${o.schema} is served by relay group ` +
        `${serving ?? '(none)'}: start relays of that group`,
    );
  }
  if (serving !== undefined && o.takeOverFrom === serving) return { instanceId, takeOverFrom: serving };
  throw new OutboxError(
    'GROUP_CONFLICT',
    `outbox ${o.schema} is served by relay group ${serving ?? '(none)'}; two groups would publish every row twice. ` +
      `To move it to relay group ${o.group} (a new layout), start ${o.group}'s relays with --take-over-from ${serving} ` +
      `(option takeOverFrom): they stop ${serving}'s relays, fence and reconcile them, then serve the outbox. ` +
      `Otherwise start relays of group ${serving}.`,
  );
}

/** This outbox's source id; read once, it is the same for every record of this relay. */
export async function readSource(ctx: StartupContext, pool: pg.Pool): Promise<string> {
  const o = ctx.options;
  const fix = `run outbox-relay migrate (migration 0005_outbox_source writes it)`;
  let rows: { source_id: string }[];
  try {
    ({ rows } = await pool.query<{ source_id: string }>(readSourceSql(o.q)));
  } catch (cause) {
    if ((cause as { code?: string }).code !== '42P01') throw cause;
    throw new OutboxError('MIGRATION_FAILED', `schema ${o.schema} has no outbox_source table: ${fix}`, { cause });
  }
  const source = rows[0]?.source_id;
  if (source === undefined) {
    throw new OutboxError(
      'MIGRATION_FAILED',
      `${o.schema}.outbox_source has no row, so records cannot carry this outbox's source id: ${fix}; ` +
        `if the schema is migrated and the row was deleted, insert one (insert into ${o.q}.outbox_source default values)`,
    );
  }
  return source;
}

/** How a relay's role gets what it needs. */
function grantHint(schema: string): string {
  return `grant it the relay role: outbox-relay roles --schema ${schema} --apply (as the schema's owner), then GRANT ${schema}_relay TO the relay's login`;
}
