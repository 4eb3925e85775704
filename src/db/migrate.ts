import { readdir, readFile } from 'node:fs/promises';
import pg from 'pg';
import { OutboxError } from '../errors.js';
import type { Logger } from '../log.js';
import { DEFAULT_SCHEMA, quoteSchema } from './identifiers.js';

const MIGRATIONS_DIR = new URL('../../migrations/', import.meta.url);

export interface Migration {
  id: number;
  name: string;
  sql: string;
}

/** The numbered SQL files in `migrations/`, in order. */
export async function loadMigrations(): Promise<Migration[]> {
  const files = (await readdir(MIGRATIONS_DIR)).filter((f) => /^\d{4}_[a-z0-9_]+\.sql$/.test(f)).sort();
  return Promise.all(
    files.map(async (file) => ({
      id: Number(file.slice(0, 4)),
      name: file.replace(/\.sql$/, ''),
      sql: await readFile(new URL(file, MIGRATIONS_DIR), 'utf8'),
    })),
  );
}

export interface MigrateOptions {
  /** A pool or a connection string. A string gets a short-lived pool of its own. */
  db: pg.Pool | string;
  /** Schema holding the outbox tables. Default `outbox`. */
  schema?: string;
  logger?: Logger;
  /**
   * Opt-in: partition `messages` by `created_at`, one partition per unit (see
   * migrations/optional/partition_messages_by_time.sql and the README's "Partitioned
   * outbox"). Converts the table once, after the numbered migrations and in their
   * transaction; on a table already partitioned by the same unit it only sets
   * `partitionsAhead`. Default: not partitioned.
   */
  partitionBy?: PartitionUnit;
  /** Partitions made in advance beyond the current unit's (1–366). Default 3 on a conversion; given again later, it changes the count. */
  partitionsAhead?: number;
}

export const PARTITION_UNITS = ['day', 'week', 'month'] as const;
export type PartitionUnit = (typeof PARTITION_UNITS)[number];
export const DEFAULT_PARTITIONS_AHEAD = 3;
const PARTITIONING = 'partition_messages_by_time';

export interface MigrateResult {
  applied: string[];
}

/**
 * Brings the schema up to date: forward-only, all pending migrations in one transaction.
 * Safe to run twice and from several processes at once: migrators serialise on a
 * transaction-scoped advisory lock and each re-reads what is applied after taking it.
 */
export async function migrate(options: MigrateOptions): Promise<MigrateResult> {
  const schema = options.schema ?? DEFAULT_SCHEMA;
  const q = quoteSchema(schema);
  const partitioning = partitioningOf(options);
  const ownPool = typeof options.db === 'string' ? new pg.Pool({ connectionString: options.db, max: 1 }) : undefined;
  const pool = ownPool ?? (options.db as pg.Pool);
  const migrations = await loadMigrations();
  const client = await pool.connect();
  try {
    // Up to date: nothing to do, and no DDL asked of a role that may not make any (a relay
    // started with --migrate under its own least-privilege role).
    if (!partitioning && (await upToDate(client, q, migrations))) return { applied: [] };
    await client.query('begin');
    await client.query(`select pg_advisory_xact_lock(hashtext('outbox-relay.migrate'), hashtext($1::text))`, [schema]);
    await client.query(`create schema if not exists ${q}`);
    await client.query(
      `create table if not exists ${q}.migrations (
         id integer primary key,
         name text not null,
         applied_at timestamptz not null default now()
       )`,
    );
    const { rows } = await client.query<{ id: number }>(`select id from ${q}.migrations order by id`);
    const done = new Set(rows.map((r) => r.id));
    const latest = migrations.at(-1)?.id ?? 0;
    const ahead = rows.filter((r) => r.id > latest);
    if (ahead.length > 0) {
      throw new OutboxError(
        'MIGRATION_FAILED',
        `schema ${schema} has migration ${ahead[0]!.id}, newer than this outbox-relay knows (${latest}); upgrade outbox-relay`,
      );
    }
    const applied: string[] = [];
    for (const migration of migrations) {
      if (done.has(migration.id)) continue;
      try {
        await client.query(migration.sql.replaceAll(':schema', q));
      } catch (cause) {
        throw new OutboxError('MIGRATION_FAILED', `migration ${migration.name} failed: ${(cause as Error).message}`, { cause });
      }
      await client.query(`insert into ${q}.migrations (id, name) values ($1::int, $2::text)`, [migration.id, migration.name]);
      applied.push(migration.name);
    }
    if (partitioning && (await partitionMessages(client, q, schema, partitioning))) applied.push(`${PARTITIONING} (${partitioning.unit})`);
    await client.query('commit');
    if (applied.length > 0) options.logger?.info({ schema, applied }, 'migrations applied');
    return { applied };
  } catch (err) {
    await client.query('rollback').catch(() => undefined);
    const denied = [err, (err as Error).cause].find((e) => (e as { code?: string } | undefined)?.code === '42501');
    if (denied) {
      const { rows } = await client.query<{ role: string }>('select current_user as role').catch(() => ({ rows: [] as { role: string }[] }));
      throw new OutboxError(
        'PERMISSION_DENIED',
        `role ${rows[0]?.role ?? '?'} may not migrate schema ${schema} (${(denied as Error).message}): run outbox-relay migrate as the schema's owner ` +
          '(or a role with CREATE on the database); the relay, consumers and writers need no DDL once it is migrated',
        { cause: err },
      );
    }
    throw err;
  } finally {
    client.release();
    await ownPool?.end();
  }
}

/** Whether every migration is applied already, read without a lock or DDL (false when unsure: the locked path decides). */
async function upToDate(client: pg.PoolClient, q: string, migrations: Migration[]): Promise<boolean> {
  const { rows: table } = await client.query<{ t: string | null }>(`select to_regclass($1::text)::text as t`, [`${q}.migrations`]);
  if (table[0]?.t === null || table[0]?.t === undefined) return false;
  try {
    const { rows } = await client.query<{ id: number }>(`select id from ${q}.migrations`);
    const done = new Set(rows.map((r) => r.id));
    const latest = migrations.at(-1)?.id ?? 0;
    return rows.every((r) => r.id <= latest) && migrations.every((m) => done.has(m.id));
  } catch {
    return false;
  }
}

/** `ahead` is undefined when not given: the default on a conversion, left as it is on a partitioned table. */
function partitioningOf(options: MigrateOptions): { unit: PartitionUnit; ahead: number | undefined } | undefined {
  if (options.partitionBy === undefined) {
    if (options.partitionsAhead !== undefined) throw new OutboxError('INVALID_ARGUMENT', 'partitionsAhead is given without partitionBy');
    return undefined;
  }
  if (!(PARTITION_UNITS as readonly string[]).includes(options.partitionBy)) {
    throw new OutboxError('INVALID_ARGUMENT', `partitionBy must be one of ${PARTITION_UNITS.join(', ')}, got ${JSON.stringify(options.partitionBy)}`);
  }
  const ahead = options.partitionsAhead;
  if (ahead !== undefined && (!Number.isInteger(ahead) || ahead < 1 || ahead > 366)) {
    throw new OutboxError('INVALID_ARGUMENT', `partitionsAhead must be an integer from 1 to 366, got ${JSON.stringify(ahead)}`);
  }
  return { unit: options.partitionBy, ahead };
}

/** Converts messages to the partitioned layout unless it is already; returns whether it converted. */
async function partitionMessages(client: pg.PoolClient, q: string, schema: string, { unit, ahead }: { unit: PartitionUnit; ahead: number | undefined }): Promise<boolean> {
  const { rows } = await client.query<{ exists: boolean }>(`select to_regclass($1::text) is not null as exists`, [`${q}.message_partitioning`]);
  if (rows[0]?.exists) {
    const current = (await client.query<{ unit: string }>(`select unit from ${q}.message_partitioning`)).rows[0]?.unit;
    if (current !== unit) {
      throw new OutboxError('MIGRATION_FAILED', `${schema}.messages is already partitioned by ${current}; it cannot be partitioned by ${unit} as well`);
    }
    if (ahead !== undefined) {
      await client.query(`update ${q}.message_partitioning set ahead = $1::int`, [ahead]);
      await client.query(`select count(*) from ${q}.maintain_message_partitions_as_of(null, now(), 1000)`);
    }
    // Grants made on the table since reach its partitions (the relay's retention needs them on the default one).
    await client.query(`select ${q}.message_partition_grant(partition_name) from ${q}.message_partition_bounds()`);
    return false;
  }
  await client.query(`select set_config('outbox_relay.partition_unit', $1::text, true), set_config('outbox_relay.partitions_ahead', $2::text, true)`, [
    unit,
    String(ahead ?? DEFAULT_PARTITIONS_AHEAD),
  ]);
  const sql = await readFile(new URL(`optional/${PARTITIONING}.sql`, MIGRATIONS_DIR), 'utf8');
  try {
    await client.query(sql.replaceAll(':schema', q));
  } catch (cause) {
    throw new OutboxError('MIGRATION_FAILED', `${PARTITIONING} failed: ${(cause as Error).message}`, { cause });
  }
  return true;
}
