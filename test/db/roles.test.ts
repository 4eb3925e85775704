import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadMigrations, migrate } from '../../src/db/migrate.js';
import { missingPrivileges } from '../../src/db/privileges.js';
import { applyRoles, rolesPsqlScript } from '../../src/sql/roles.js';
import { OUTBOX_FUNCTIONS, OUTBOX_TABLES, ROLE_KINDS, roleNames, type RoleKind, type RoleNames } from '../../src/db/roles.js';
import { listDeadLetters } from '../../src/ops/inspect.js';
import { collectStatus } from '../../src/ops/status.js';
import { enqueue } from '../../src/outbox/enqueue.js';
import { createRelay } from '../../src/relay/relay.js';
import { relayed, testConsumer } from '../support/consumer.js';
import { cli } from '../support/cli.js';
import { databaseUrl } from '../support/db.js';
import { freshTopic, readTopic } from '../support/kafka.js';
import { expectExactlyOnce, testRelayOptions } from '../support/relay.js';
import { useTestServices } from '../support/services.js';
import { uniqueName, waitFor } from '../support/wait.js';

const run = promisify(execFile);

/** The URL of the test database for another (trust-authenticated) user. */
function urlOf(user: string): string {
  const url = new URL(databaseUrl());
  url.username = user;
  url.password = '';
  return url.toString();
}

/** Runs `fn` on one connection as `user`, closed afterwards. */
async function as<T>(user: string, fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: urlOf(user) });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

/** The statement fails for want of a privilege (SQLSTATE 42501), and for no other reason. */
async function expectDenied(client: pg.Client, text: string): Promise<void> {
  await client.query('savepoint denied').catch(() => undefined);
  await expect(client.query(text), text).rejects.toMatchObject({ code: '42501' });
  await client.query('rollback to savepoint denied').catch(() => undefined);
}

/** Every privilege the roles hold on the schema's objects, by role kind, sorted. */
async function privileges(pool: pg.Pool, schema: string, names: RoleNames): Promise<string[]> {
  const { rows } = await pool.query<{ grantee: string; line: string }>(
    `select r.rolname as grantee, 'schema ' || a.privilege_type as line
       from pg_namespace n, aclexplode(n.nspacl) a join pg_roles r on r.oid = a.grantee where n.nspname = $1
     union all
     select r.rolname, c.relname || ' ' || a.privilege_type
       from pg_class c join pg_namespace n on n.oid = c.relnamespace, aclexplode(c.relacl) a join pg_roles r on r.oid = a.grantee where n.nspname = $1
     union all
     select r.rolname, c.relname || '.' || att.attname || ' ' || a.privilege_type
       from pg_attribute att join pg_class c on c.oid = att.attrelid join pg_namespace n on n.oid = c.relnamespace,
            aclexplode(att.attacl) a join pg_roles r on r.oid = a.grantee where n.nspname = $1
     union all
     select r.rolname, p.oid::regprocedure::text || ' ' || a.privilege_type
       from pg_proc p join pg_namespace n on n.oid = p.pronamespace, aclexplode(p.proacl) a join pg_roles r on r.oid = a.grantee where n.nspname = $1`,
    [schema],
  );
  const kindOf = new Map(ROLE_KINDS.map((k) => [names[k], k]));
  return rows
    .filter((r) => kindOf.has(r.grantee))
    .map((r) => `${kindOf.get(r.grantee)}: ${r.line.replaceAll(`${schema}.`, 'SCHEMA.')}`)
    .sort();
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Drops roles of this file's earlier runs whose process is gone (their schemas went at the start of the run). */
async function dropLeftoverRoles(pool: pg.Pool): Promise<void> {
  const { rows } = await pool.query<{ rolname: string; pid: string }>(
    `select rolname, substring(rolname from '^[tu]_(\\d+)_') as pid from pg_roles
      where rolname ~ '^[tu]_\\d+_\\d+_[a-z0-9]+_'`,
  );
  for (const { rolname, pid } of rows) if (!processAlive(Number(pid))) await dropRole(pool, rolname);
}

/** A role name as an SQL identifier. */
const ident = (role: string) => `"${role.replaceAll('"', '""')}"`;

async function dropRole(pool: pg.Pool, role: string): Promise<void> {
  const q = ident(role);
  await pool.query(`reassign owned by ${q} to current_user; drop owned by ${q}; drop role if exists ${q}`);
}

describe('least-privilege roles (outbox-relay roles)', () => {
  const { pool, admin, connection, producer, consumers } = useTestServices({ poolSize: 6 });
  const id = uniqueName('u');
  /** A non-superuser that owns the schema and runs the migrations and the roles' SQL, as in production. */
  const owner = `${id}_owner`;
  /** One login per role kind, a member of its group role. */
  const user = Object.fromEntries(ROLE_KINDS.map((k) => [k, `${id}_${k}`])) as Record<RoleKind, string>;
  const schema = uniqueName('t').toLowerCase();
  const names = roleNames(schema);
  const roles: string[] = [];
  let ownerPool: pg.Pool;

  beforeAll(async () => {
    await dropLeftoverRoles(pool);
    const database = new URL(databaseUrl()).pathname.slice(1);
    await pool.query(`create role "${owner}" login createrole; grant create on database "${database}" to "${owner}"`);
    roles.push(owner);
    ownerPool = new pg.Pool({ connectionString: urlOf(owner), max: 2 });
    await migrate({ db: ownerPool, schema });
    // A hardened database: PUBLIC may execute none of the schema's functions, so whatever a
    // role executes must come from its grants.
    await ownerPool.query(`revoke execute on all functions in schema ${schema} from public`);
    const applied = await cli('roles', '--schema', schema, '--apply', '--database-url', urlOf(owner));
    expect(applied, applied.stderr).toMatchObject({ code: 0 });
    roles.push(...Object.values(names));
    for (const kind of ROLE_KINDS) {
      await pool.query(`create role "${user[kind]}" login in role "${names[kind]}"`);
      roles.push(user[kind]);
    }
  });

  afterAll(async () => {
    await ownerPool?.end();
    // Logins first, the group roles and the owner after (its schema stays, owned by the test's superuser, for inspection).
    for (const role of roles.reverse()) await dropRole(pool, role);
  });

  it('applying the roles again changes nothing, scripts/roles.sql run by psql grants the same, and every object of the schema is covered', async () => {
    const before = await privileges(pool, schema, names);
    expect(before.length).toBeGreaterThan(20);
    const { rows: groups } = await pool.query(`select rolname, rolcanlogin, rolsuper, rolcreaterole from pg_roles where rolname = any($1::text[]) order by rolname`, [
      Object.values(names),
    ]);
    expect(groups).toEqual(Object.values(names).sort().map((rolname) => ({ rolname, rolcanlogin: false, rolsuper: false, rolcreaterole: false })));
    // Names PostgreSQL reserves, or the same name twice, are bad input.
    expect(await cli('roles', '--schema', schema, '--relay', 'pg_relay')).toMatchObject({ code: 2 });
    expect(await cli('roles', '--schema', schema, '--writer', 'svc', '--relay', 'svc')).toMatchObject({ code: 2 });
    const again = await cli('roles', '--schema', schema, '--apply', '--database-url', urlOf(owner));
    expect(again, again.stderr).toMatchObject({ code: 0 });
    expect(await privileges(pool, schema, names)).toEqual(before);

    // The script is the same SQL with psql variables, rendered from the same source.
    const latest = (await loadMigrations()).at(-1)!.id;
    expect(await readFile(new URL('../../scripts/roles.sql', import.meta.url), 'utf8'), 'scripts/roles.sql: regenerate with outbox-relay roles --psql').toBe(rolesPsqlScript(latest));
    const other = uniqueName('t').toLowerCase();
    await migrate({ db: ownerPool, schema: other });
    await ownerPool.query(`revoke execute on all functions in schema ${other} from public`);
    const otherNames = roleNames(other);
    roles.push(...Object.values(otherNames));
    await run('psql', [urlOf(owner), '-q', '-v', `schema=${other}`, '-f', 'scripts/roles.sql'], { cwd: new URL('../..', import.meta.url) });
    expect(await privileges(pool, other, otherNames)).toEqual(before);

    // The roles' SQL knows every table and function the migrations make.
    const { rows: tables } = await pool.query(`select relname from pg_class where relnamespace = $1::regnamespace and relkind in ('r', 'p') order by 1`, [schema]);
    expect(tables.map((r) => r.relname)).toEqual([...OUTBOX_TABLES].sort());
    const { rows: functions } = await pool.query(`select oid::regprocedure::text as fn from pg_proc where pronamespace = $1::regnamespace order by 1`, [schema]);
    expect(functions.map((r) => r.fn.replace(`${schema}.`, ''))).toEqual([...OUTBOX_FUNCTIONS].sort());

    // Not migrated: refused with a clear error, nothing created.
    const unmigrated = uniqueName('t').toLowerCase();
    const refused = await cli('roles', '--schema', unmigrated, '--apply', '--database-url', urlOf(owner));
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain(`schema ${unmigrated} is not migrated`);
    expect((await pool.query(`select count(*)::int as n from pg_roles where rolname like $1`, [`${unmigrated}%`])).rows[0].n).toBe(0);
  });

  it('a writer can insert outbox rows through enqueue in its own transaction, and read back nothing but their ids', async () => {
    // A relay member waiting for rows: the insert trigger reads relay_members, as its owner.
    await ownerPool.query(`insert into ${schema}.relay_members (relay_group, relay_id) values ('listening', 'r1')`);
    const wakeups: string[] = [];
    const listener = new pg.Client({ connectionString: urlOf(user.relay) });
    await listener.connect();
    try {
      listener.on('notification', (n) => wakeups.push(n.channel));
      await listener.query(`listen "${schema}.messages"`);
      const ids = await as(user.writer, async (client) => {
        await client.query('begin');
        const written = await enqueue(client, [
          { topic: 'orders', key: 'o-1', payload: { total: 10 }, eventType: 'order.paid' },
          { topic: 'orders', key: 'o-2', payload: { total: 20 }, headers: { tenant: 'a' } },
        ], { schema });
        await client.query('commit');
        // By hand, too; a header only the relay may set is refused by the trigger, under this role as well.
        const { rows } = await client.query(`insert into ${schema}.messages (topic, key, payload) values ('orders', 'o-3', 'x') returning id::text`);
        await expect(client.query(`insert into ${schema}.messages (topic, headers) values ('orders', '{"outbox-id": "1"}')`)).rejects.toMatchObject({ code: '23514' });
        return [...written, rows[0].id as string];
      });
      await waitFor(() => wakeups.length > 0, { timeoutMs: 10_000, message: "the writer's commit woke the listening relay" });
      expect(wakeups[0]).toBe(`${schema}.messages`);
      const { rows } = await ownerPool.query(`select id::text, key, state from ${schema}.messages order by id`);
      expect(rows).toEqual(ids.map((i, n) => ({ id: i, key: `o-${n + 1}`, state: 'pending' })));

      await as(user.writer, async (client) => {
        await client.query('begin');
        for (const text of [
          `select * from ${schema}.messages`,
          `select payload from ${schema}.messages`,
          `select id from ${schema}.messages where state = 'pending'`,
          `update ${schema}.messages set state = 'sent'`,
          `delete from ${schema}.messages`,
          `select * from ${schema}.relay_members`,
          `insert into ${schema}.relay_members (relay_group, relay_id) values ('x', 'y')`,
          `select * from ${schema}.outbox_source`,
          `select * from ${schema}.consumer_offsets`,
          `select * from ${schema}.dead_letters`,
          `insert into ${schema}.operator_actions (actor, command, reason) values ('w', 'retry', 'r')`,
          `select * from ${schema}.claim_checks`,
          `create table ${schema}.mine (a int)`,
        ]) {
          await expectDenied(client, text);
        }
        await client.query('rollback');
      });
    } finally {
      await listener.end();
      await ownerPool.query(`delete from ${schema}.relay_members where relay_group = 'listening'`);
      await ownerPool.query(`delete from ${schema}.messages`);
    }
  });

  it("a relay under the relay role publishes the writers' rows exactly once, serves its dashboard's reads, and may make no DDL", async () => {
    const topic = await freshTopic(admin, 2);
    const ids = await as(user.writer, async (client) => {
      await client.query('begin');
      const written = await enqueue(client, Array.from({ length: 30 }, (_, i) => ({ topic, key: `k${i % 7}`, payload: `p${i}` })), { schema });
      await client.query('commit');
      return written;
    });
    const relay = createRelay(testRelayOptions(schema, { databaseUrl: urlOf(user.relay), retention: { keepMs: 60_000, intervalMs: 200 } }));
    try {
      await relay.start();
      const read = await readTopic(connection, topic, 2, { expected: ids.length });
      expectExactlyOnce(read, ids);
      await waitFor(async () => (await ownerPool.query(`select count(*)::int as n from ${schema}.messages where state = 'sent'`)).rows[0].n === ids.length);
      // The dashboard's reads, under the relay's own pool.
      await ownerPool.query(
        `insert into ${schema}.dead_letters (group_id, topic, partition, "offset", key, value, error, attempts) values ('dashboard-group', $1, 0, 0, 'k', 'v', 'boom', 1)`,
        [topic],
      );
      const status = await collectStatus(relay.database!, `"${schema}"`, undefined);
      expect(status).toMatchObject({ verdict: expect.any(String) });
      const letters = await listDeadLetters(relay.database!, `"${schema}"`, { group: 'dashboard-group', topic: null, all: true, limit: 10 });
      expect(letters).toHaveLength(1);
      await ownerPool.query(`delete from ${schema}.dead_letters where group_id = 'dashboard-group'`);
    } finally {
      await relay.stop();
    }
    await as(user.relay, async (client) => {
      for (const text of [
        `create table ${schema}.mine (a int)`,
        `alter table ${schema}.messages add column extra int`,
        `create index on ${schema}.messages (topic)`,
        `update ${schema}.messages set payload = 'rewritten'`,
        `update ${schema}.messages set topic = 'elsewhere'`,
        `insert into ${schema}.messages (topic) values ('forged')`,
        `select key, value from ${schema}.dead_letters`,
        `update ${schema}.consumer_offsets set next_offset = 0`,
        `insert into ${schema}.operator_actions (actor, command, reason) values ('relay', 'retry', 'r')`,
      ]) {
        await expectDenied(client, text);
      }
    });
  });

  it("a relay whose role lacks a grant, or whose schema is behind, fails start() with a typed error naming what is missing, and makes nothing", async () => {
    const bare = `${id}_bare`;
    await pool.query(`create role "${bare}" login`);
    roles.push(bare);
    const noUsage = createRelay(testRelayOptions(schema, { databaseUrl: urlOf(bare), group: 'bare-group' }));
    await expect(noUsage.start()).rejects.toMatchObject({ code: 'PERMISSION_DENIED', message: expect.stringContaining(`may not read schema ${schema}`) });

    // Roles made for a relay without retention: a relay with retention is refused, naming the grant.
    const narrow = await cli('roles', '--schema', schema, '--without-retention', '--apply', '--database-url', urlOf(owner));
    expect(narrow, narrow.stderr).toMatchObject({ code: 0 });
    try {
      const withRetention = createRelay(testRelayOptions(schema, { databaseUrl: urlOf(user.relay), group: 'narrow-group', retention: {} }));
      await expect(withRetention.start()).rejects.toMatchObject({
        code: 'PERMISSION_DENIED',
        message: expect.stringMatching(new RegExp(`DELETE on "${schema}".messages \\(retention`)),
      });
      const missing = await as(user.relay, (client) => missingPrivileges(client, schema, 'relay', { retention: false }));
      expect(missing).toEqual([]);
    } finally {
      expect(await cli('roles', '--schema', schema, '--apply', '--database-url', urlOf(owner))).toMatchObject({ code: 0 });
    }

    // One migration behind: the relay is told to migrate, and cannot migrate itself; the owner can.
    const latest = (await loadMigrations()).at(-1)!;
    await ownerPool.query(`delete from ${schema}.migrations where id = $1`, [latest.id]);
    const behind = createRelay(testRelayOptions(schema, { databaseUrl: urlOf(user.relay), group: 'behind-group' }));
    await expect(behind.start()).rejects.toMatchObject({ code: 'MIGRATION_FAILED', message: expect.stringContaining(`need ${latest.id}`) });
    await expect(migrate({ db: urlOf(user.relay), schema })).rejects.toMatchObject({ code: 'PERMISSION_DENIED' });
    expect((await migrate({ db: ownerPool, schema })).applied).toEqual([latest.name]);
    // Up to date: `relay --migrate` under the relay role asks for no DDL and does nothing.
    expect((await migrate({ db: urlOf(user.relay), schema })).applied).toEqual([]);
    const { rows } = await pool.query(`select relay_group from ${schema}.relay_groups where relay_group in ('bare-group', 'narrow-group', 'behind-group')`);
    expect(rows).toEqual([]);
  });

  it('a consumer under the consumer role applies each record exactly once, with its offsets, inbox and dead letters', async () => {
    // The application's table, and its grant: the application's to make. Applying the roles
    // again leaves it alone.
    await ownerPool.query(`create table ${schema}.ledger (id bigint generated always as identity primary key, entry text not null, outbox_id text)`);
    await ownerPool.query(`grant insert, select on ${schema}.ledger to "${names.consumer}"`);
    expect(await cli('roles', '--schema', schema, '--apply', '--database-url', urlOf(owner))).toMatchObject({ code: 0 });

    const topic = await freshTopic(admin, 2);
    const entries = Array.from({ length: 20 }, (_, i) => `e${i + 1}`);
    const delivered = [
      ...(await producer.send(topic, relayed(entries))),
      // The relay publishes 3 and 7 again (same outbox ids), and one event the handler cannot apply.
      ...(await producer.send(topic, [...relayed(['e3'], 3), ...relayed(['e7'], 7), ...relayed(['poison'], 99)])),
    ];
    const consumer = testConsumer({
      databaseUrl: urlOf(user.consumer),
      schema,
      topics: [topic],
      maxAttempts: 2,
      handler: async (record, tx) => {
        const entry = record.value!.toString();
        if (entry === 'poison') throw new Error('cannot apply poison');
        await tx.query(`insert into ${schema}.ledger (entry, outbox_id) values ($1::text, $2::text)`, [entry, record.headers.outboxId ?? null]);
      },
    });
    consumers.push(consumer);
    let skipped = 0;
    consumer.on('batch', (b) => (skipped += b.skipped));
    await consumer.start();
    await waitFor(
      async () => {
        const { rows } = await ownerPool.query(
          `select (select count(*)::int from ${schema}.ledger) as applied, (select count(*)::int from ${schema}.dead_letters where topic = $1) as dead`,
          [topic],
        );
        return rows[0].applied === entries.length && rows[0].dead === 1 && skipped === 2;
      },
      { timeoutMs: 45_000, message: 'every entry applied, the poison record dead-lettered, the re-published ones skipped' },
    );
    await consumer.stop();
    const { rows: ledger } = await ownerPool.query(`select entry, count(*)::int as n from ${schema}.ledger group by entry order by entry`);
    expect(ledger).toEqual([...entries].sort().map((entry) => ({ entry, n: 1 })));
    // The offsets stored are past the last record of each partition.
    const { rows: offsets } = await ownerPool.query(`select partition, next_offset::int as next from ${schema}.consumer_offsets where topic = $1 order by partition`, [topic]);
    const last = new Map<number, number>();
    for (const d of delivered) last.set(d.partition, Math.max(last.get(d.partition) ?? -1, d.offset));
    expect(offsets).toEqual([...last].sort(([a], [b]) => a - b).map(([partition, offset]) => ({ partition, next: offset + 1 })));
    await as(user.consumer, async (client) => {
      for (const text of [`select * from ${schema}.messages`, `insert into ${schema}.messages (topic) values ('t')`, `select * from ${schema}.relay_shards`, `create table ${schema}.mine (a int)`]) {
        await expectDenied(client, text);
      }
    });
  });

  it('an operator inspects and repairs through the CLI, audited, and may not write the outbox', async () => {
    const { rows } = await ownerPool.query(
      `insert into ${schema}.messages (topic, key, payload, state, attempts, last_error, created_at)
       values ('repair-me', 'a', 'x', 'dead', 3, 'no such topic', now() - interval '1 hour'),
              ('repair-me', 'b', 'y', 'dead', 3, 'no such topic', now() - interval '1 hour')
       returning id::text`,
    );
    const [retryId, skipId] = rows.map((r) => r.id as string);
    const group = uniqueName('ops-group');
    await ownerPool.query(`insert into ${schema}.consumer_offsets (group_id, topic, partition, next_offset) values ($1, 'ops-topic', 0, 5)`, [group]);
    const { rows: letters } = await ownerPool.query(
      `insert into ${schema}.dead_letters (group_id, topic, partition, "offset", value, error, attempts) values ($1, 'ops-topic', 0, 3, 'v', 'boom', 1) returning id::text`,
      [group],
    );
    const op = (...args: string[]) => cli(...args, '--schema', schema, '--database-url', urlOf(user.operator));

    const status = await op('status', '--json');
    expect(status, status.stderr).toMatchObject({ code: 0 });
    const stuck = await op('stuck', '--older-than', '1m', '--json');
    expect(stuck, stuck.stderr).toMatchObject({ code: 0 });
    expect(JSON.parse(stuck.stdout).rows.map((r: { id: string }) => r.id)).toEqual([retryId, skipId]);
    expect(await op('show', retryId!)).toMatchObject({ code: 0 });
    const retried = await op('retry', retryId!, '--reason', 'topic created', '--actor', 'oncall');
    expect(retried, retried.stderr).toMatchObject({ code: 0 });
    const skipped = await op('skip', skipId!, '--reason', 'obsolete event', '--actor', 'oncall');
    expect(skipped, skipped.stderr).toMatchObject({ code: 0 });
    expect(await op('dead-letters', 'list', '--group', group)).toMatchObject({ code: 0 });
    expect(await op('dead-letters', 'show', letters[0].id, '--group', group)).toMatchObject({ code: 0 });
    const discarded = await op('dead-letters', 'discard', letters[0].id, '--group', group, '--reason', 'applied by hand');
    expect(discarded, discarded.stderr).toMatchObject({ code: 0 });
    expect(await op('offsets', 'show', '--group', group)).toMatchObject({ code: 0 });

    const { rows: after } = await ownerPool.query(`select id::text, state from ${schema}.messages where id = any($1::bigint[]) order by id`, [[retryId, skipId]]);
    expect(after).toEqual([{ id: retryId, state: 'pending' }, { id: skipId, state: 'skipped' }]);
    const { rows: audit } = await ownerPool.query(`select actor, command, row_ids::text[] as ids from ${schema}.operator_actions order by id`);
    expect(audit).toEqual([
      { actor: 'oncall', command: 'retry', ids: [retryId] },
      { actor: 'oncall', command: 'skip', ids: [skipId] },
      expect.objectContaining({ command: 'dead-letters discard' }),
    ]);

    await as(user.operator, async (client) => {
      for (const text of [
        `insert into ${schema}.messages (topic, payload) values ('orders', 'forged')`,
        `update ${schema}.messages set payload = 'rewritten'`,
        `delete from ${schema}.messages`,
        `delete from ${schema}.operator_actions`,
        `update ${schema}.operator_actions set reason = 'nothing happened'`,
        `create table ${schema}.mine (a int)`,
      ]) {
        await expectDenied(client, text);
      }
    });
    // The CLI says where the grants come from when one is missing.
    const denied = await cli('retry', retryId!, '--reason', 'r', '--schema', schema, '--database-url', urlOf(user.consumer));
    expect(denied.code).toBe(1);
    expect(denied.stderr).toContain('outbox-relay roles');
  });

  it('on a partitioned outbox the relay keeps the partitions and purges the default partition, as the owner lets it, without DDL of its own', async () => {
    const partitioned = uniqueName('t').toLowerCase();
    await migrate({ db: ownerPool, schema: partitioned, partitionBy: 'day' });
    await ownerPool.query(`revoke execute on all functions in schema ${partitioned} from public`);
    // A relay role named with quotes and a space: escaped wherever the SQL names it.
    const partNames = roleNames(partitioned, { relay: `${partitioned}_Relay "p" 'q'` });
    roles.push(...Object.values(partNames));
    await applyRoles({ db: ownerPool, schema: partitioned, names: partNames });
    const relayUser = `${id}_prelay`;
    await pool.query(`create role "${relayUser}" login in role ${ident(partNames.relay)}`);
    roles.push(relayUser);
    await as(relayUser, async (client) => {
      expect(await missingPrivileges(client, partitioned, 'relay', { partitioned: true })).toEqual([]);
      const { rows } = await client.query(`select action from ${partitioned}.maintain_message_partitions(interval '1 day')`);
      expect(Array.isArray(rows)).toBe(true);
      await client.query(`delete from ${partitioned}.messages_default where state = 'sent' and sent_at < now() - interval '1 day'`);
      await expectDenied(client, `create table ${partitioned}.mine (a int)`);
    });
  });
});
