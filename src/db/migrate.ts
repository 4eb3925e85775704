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
}

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
  const ownPool = typeof options.db === 'string' ? new pg.Pool({ connectionString: options.db, max: 1 }) : undefined;
  const pool = ownPool ?? (options.db as pg.Pool);
  const migrations = await loadMigrations();
  const client = await pool.connect();
  try {
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
    await client.query('commit');
    if (applied.length > 0) options.logger?.info({ schema, applied }, 'migrations applied');
    return { applied };
  } catch (err) {
    await client.query('rollback').catch(() => undefined);
    throw err;
  } finally {
    client.release();
    await ownPool?.end();
  }
}
