import type pg from 'pg';
import { is } from 'drizzle-orm';
import { getTableConfig, PgTable } from 'drizzle-orm/pg-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadMigrations, migrate } from '../../src/db/migrate.js';
import { outboxTables } from '../../src/db/schema.js';
import { MAX_SCHEMA_LENGTH } from '../../src/db/identifiers.js';
import { enqueue } from '../../src/outbox/enqueue.js';
import { testPool } from '../support/db.js';
import { uniqueName } from '../support/wait.js';

/** The catalog's view of a schema: tables, columns, constraints and indexes, sorted. */
async function describeSchema(pool: pg.Pool, schema: string) {
  const columns = await pool.query(
    `select table_name, column_name, data_type, is_nullable, column_default, is_identity
       from information_schema.columns where table_schema = $1 order by table_name, ordinal_position`,
    [schema],
  );
  const constraints = await pool.query(
    `select conrelid::regclass::text as table_name, conname, pg_get_constraintdef(oid) as definition
       from pg_constraint where connamespace = $1::regnamespace order by 1, 2`,
    [schema],
  );
  const indexes = await pool.query(`select tablename, indexname, indexdef from pg_indexes where schemaname = $1 order by 1, 2`, [schema]);
  const strip = (text: string) => text.replaceAll(`${schema}.`, 'SCHEMA.').replaceAll(`"${schema}".`, 'SCHEMA.');
  return {
    columns: columns.rows.map((r) => ({ ...r, column_default: r.column_default && strip(r.column_default) })),
    constraints: constraints.rows.map((r) => ({ ...r, table_name: strip(r.table_name) })),
    indexes: indexes.rows.map((r) => ({ ...r, indexdef: strip(r.indexdef) })),
  };
}

describe('migrate', () => {
  let pool: pg.Pool;
  beforeAll(() => {
    pool = testPool(10);
  });
  afterAll(() => pool.end());

  it('two concurrent migrate runs both succeed and apply each migration once', async () => {
    const schema = uniqueName('t').toLowerCase();
    const [a, b] = await Promise.all([migrate({ db: pool, schema }), migrate({ db: pool, schema })]);
    const all = (await loadMigrations()).map((m) => m.name);
    expect([...a.applied, ...b.applied].sort()).toEqual(all.sort());
    const { rows } = await pool.query(`select name from "${schema}".migrations order by id`);
    expect(rows.map((r) => r.name)).toEqual(all);
    expect((await migrate({ db: pool, schema })).applied).toEqual([]);
  });

  it('the resulting schema is what the migrations say (snapshot) and what the drizzle tables declare', async () => {
    const schema = uniqueName('t').toLowerCase();
    await migrate({ db: pool, schema });
    const described = await describeSchema(pool, schema);
    expect(described).toMatchSnapshot();

    for (const table of Object.values(outboxTables(schema))) {
      if (!is(table, PgTable)) continue;
      const config = getTableConfig(table);
      const dbColumns = described.columns.filter((c) => c.table_name === config.name);
      expect(dbColumns.map((c) => c.column_name).sort(), `columns of ${config.name}`).toEqual(config.columns.map((c) => c.name).sort());
      for (const column of config.columns) {
        const db = dbColumns.find((c) => c.column_name === column.name)!;
        expect(db.is_nullable === 'NO', `${config.name}.${column.name} not null`).toBe(column.notNull);
      }
    }
  });

  it('refuses a database whose schema is newer than this code', async () => {
    const schema = uniqueName('t').toLowerCase();
    await migrate({ db: pool, schema });
    await pool.query(`insert into "${schema}".migrations (id, name) values (9999, '9999_future')`);
    await expect(migrate({ db: pool, schema })).rejects.toMatchObject({ code: 'MIGRATION_FAILED' });
  });

  it('a schema name too long for its NOTIFY channel is refused at migrate; the longest allowed one takes inserts', async () => {
    const tooLong = `t_${'x'.repeat(MAX_SCHEMA_LENGTH - 1)}`;
    await expect(migrate({ db: pool, schema: tooLong })).rejects.toMatchObject({ code: 'INVALID_OPTIONS', message: expect.stringContaining('NOTIFY channel') });
    const longest = `t_${'y'.repeat(MAX_SCHEMA_LENGTH - 2)}`;
    expect(longest).toHaveLength(MAX_SCHEMA_LENGTH);
    await migrate({ db: pool, schema: longest });
    const client = await pool.connect();
    try {
      await client.query('begin');
      // The insert trigger notifies `<schema>.messages`: it must not fail for being too long.
      await enqueue(client, { topic: 'orders', key: 'k', payload: 'p' }, { schema: longest });
      await client.query('commit');
    } finally {
      client.release();
    }
    expect((await pool.query(`select count(*)::int as n from "${longest}".messages`)).rows[0].n).toBe(1);
  });
});
