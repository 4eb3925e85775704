import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { migrate } from '../../src/db/migrate.js';
import { createLogger } from '../../src/log.js';
import { collectStatus } from '../../src/ops/status.js';
import { purgeSentRows } from '../../src/relay/retention.js';
import { createRelay } from '../../src/relay/relay.js';
import { enqueue } from '../../src/outbox/enqueue.js';
import { cli } from '../support/cli.js';
import { databaseUrl, freshSchema, inTransaction } from '../support/db.js';
import { testRelayOptions, waitAllSent, expectPublishedOnce } from '../support/relay.js';
import { useTestServices } from '../support/services.js';
import { uniqueName, waitFor } from '../support/wait.js';

const DAY = 86_400_000;

/** Midnight UTC of today plus `days`. */
function day(days: number): Date {
  const d = new Date();
  return new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate()) + days * DAY);
}

function partitionName(days: number): string {
  return `messages_p${day(days).toISOString().slice(0, 10).replaceAll('-', '')}`;
}

describe('partitioned outbox (opt-in layout)', () => {
  const { connection, pool, freshOutbox } = useTestServices();

  async function partitions(schema: string): Promise<string[]> {
    const { rows } = await pool.query<{ partition_name: string }>(
      `select partition_name from ${schema}.message_partition_bounds() order by is_default, lower_bound`,
    );
    return rows.map((r) => r.partition_name);
  }

  it('converting keeps every row and id, the id sequence, constraints, indexes, triggers, the owner and the grants', async () => {
    const schema = await freshSchema(pool);
    const role = uniqueName('reader').toLowerCase();
    const owner = uniqueName('owner').toLowerCase();
    await pool.query(`create role ${role} nologin; create role ${owner} nologin`);
    try {
      await pool.query(`grant usage on schema ${schema} to ${role}; grant select on ${schema}.messages to ${role} with grant option; grant update (state) on ${schema}.messages to ${role}`);
      // The table has an owner of its own, who reads the relay's tables (the wake-up trigger does).
      await pool.query(
        `grant create, usage on schema ${schema} to ${owner}; grant select on all tables in schema ${schema} to ${owner}; alter table ${schema}.messages owner to ${owner}`,
      );
      const ids = await inTransaction(pool, (client) =>
        enqueue(client, Array.from({ length: 20 }, (_, i) => ({ topic: 'orders', key: `k${i % 4}`, payload: { i } })), { schema }),
      );
      await pool.query(`update ${schema}.messages set state = 'sent', sent_at = now(), kafka_partition = 0, kafka_offset = id where id <= $1::bigint`, [ids[9]]);
      // A row dated after the current unit (an explicit created_at) fits no partition the table can become.
      await pool.query(`update ${schema}.messages set created_at = now() + interval '10 years' where id = $1::bigint`, [ids[11]]);
      await expect(migrate({ db: pool, schema, partitionBy: 'day' })).rejects.toMatchObject({
        code: 'MIGRATION_FAILED',
        message: expect.stringContaining(`rows created after`) && expect.stringContaining(`(the first: id ${ids[11]} at`),
      });
      const { rows: still } = await pool.query(`select relkind from pg_class where oid = $1::regclass`, [`${schema}.messages`]);
      expect(still[0].relkind).toBe('r');
      await pool.query(`update ${schema}.messages set created_at = now() where id = $1::bigint`, [ids[11]]);
      // The sequence has gone past the highest id left: an id must never be handed out twice.
      await pool.query(`delete from ${schema}.messages where id = $1::bigint`, [ids[19]]);
      const before = (await pool.query(`select * from ${schema}.messages order by id`)).rows;

      const result = await migrate({ db: pool, schema, partitionBy: 'day' });
      expect(result.applied).toEqual(['partition_messages_by_time (day)']);

      const { rows: kind } = await pool.query(`select relkind from pg_class where oid = $1::regclass`, [`${schema}.messages`]);
      expect(kind[0].relkind).toBe('p');
      expect((await pool.query(`select * from ${schema}.messages order by id`)).rows).toEqual(before);
      expect(await partitions(schema)).toEqual([
        `messages_before_${day(1).toISOString().slice(0, 10).replaceAll('-', '')}`,
        partitionName(1),
        partitionName(2),
        partitionName(3),
        'messages_default',
      ]);

      const { rows: owners } = await pool.query(
        `select (select relowner::regrole::text from pg_class where oid = $1::regclass) as tbl,
                (select proowner::regrole::text from pg_proc where oid = $2::regprocedure) as fn`,
        [`${schema}.messages`, `${schema}.maintain_message_partitions(interval)`],
      );
      expect(owners[0]).toEqual({ tbl: owner, fn: owner });
      const { rows: triggers } = await pool.query(`select tgname from pg_trigger where tgrelid = $1::regclass and not tgisinternal order by 1`, [`${schema}.messages`]);
      expect(triggers.map((t) => t.tgname)).toEqual(['messages_headers_unreserved', 'messages_key_size', 'messages_notify']);
      // Ids come from the sequence only: a partition's primary key cannot see the others'.
      await expect(pool.query(`insert into ${schema}.messages (id, topic, payload) values ($1::bigint, 'orders', 'x')`, [ids[0]])).rejects.toMatchObject({ code: '428C9' });
      await expect(pool.query(`insert into ${schema}.messages (topic, payload) values ('not a topic!', 'x')`)).rejects.toMatchObject({
        code: '23514',
        constraint: 'messages_topic_legal',
      });

      const next = await inTransaction(pool, (client) => enqueue(client, { topic: 'orders', key: 'k0', payload: {} }, { schema }));
      expect(BigInt(next[0]!)).toBeGreaterThan(BigInt(ids[19]!));
      // Beyond every partition: kept in the default partition, never refused.
      const { rows: far } = await pool.query(
        `insert into ${schema}.messages (topic, key, payload, created_at) values ('orders', 'k1', 'x', now() + interval '400 days') returning tableoid::regclass::text as part`,
      );
      expect(far[0].part).toBe(`${schema}.messages_default`);

      const { rows: indexes } = await pool.query<{ name: string }>(
        `select c.relname as name from pg_index i join pg_class c on c.oid = i.indexrelid where i.indrelid = $1::regclass order by 1`,
        [`${schema}.messages`],
      );
      expect(indexes.map((i) => i.name)).toEqual([
        'messages_blocking_key_idx',
        'messages_dead_idx',
        'messages_held_idx',
        'messages_publishable_idx',
        'messages_sent_at_idx',
        'messages_skipped_idx',
      ]);
      // The headers check still refuses what the relay sets itself.
      await expect(pool.query(`insert into ${schema}.messages (topic, payload, headers) values ('orders', 'x', '{"outbox-id": "1"}')`)).rejects.toMatchObject({
        code: '23514',
      });
      // And the key size check refuses a key too long for the indexes of keys.
      await expect(pool.query(`insert into ${schema}.messages (topic, key, payload) values ('orders', repeat('k', 2049), 'x')`)).rejects.toMatchObject({
        code: '23514',
        constraint: 'messages_key_size',
      });
      const { rows: grants } = await pool.query(
        `select has_table_privilege($1::text, $2::text, 'select with grant option') as sel,
                has_column_privilege($1::text, $2::text, 'state', 'update') as upd_state,
                has_table_privilege($1::text, $2::text, 'update') as upd, has_table_privilege($1::text, $2::text, 'delete') as del`,
        [role, `${schema}.messages`],
      );
      expect(grants[0]).toEqual({ sel: true, upd_state: true, upd: false, del: false });
      // Partitions get the table's grants (the relay's retention works on the default one).
      const { rows: partGrants } = await pool.query(`select has_table_privilege($1::text, $2::text, 'select') as sel`, [role, `${schema}.messages_default`]);
      expect(partGrants[0].sel).toBe(true);

      // A role without DDL rights (a relay's) may keep the partitions once granted the function, which runs as the owner.
      const client = await pool.connect();
      try {
        await pool.query(`drop table ${schema}.${partitionName(3)}`);
        await client.query(`set role ${role}`);
        await expect(client.query(`select * from ${schema}.maintain_message_partitions(null)`)).rejects.toMatchObject({ code: '42501' });
        await pool.query(`grant execute on function ${schema}.maintain_message_partitions(interval) to ${role}`);
        const { rows: made } = await client.query(`select action, partition_name from ${schema}.maintain_message_partitions(null)`);
        expect(made).toEqual([{ action: 'created', partition_name: partitionName(3) }]);
        // It never drops what the retention period keeps, nor moves time: those are the owner's.
        await expect(client.query(`select * from ${schema}.maintain_message_partitions(interval '-1 day')`)).rejects.toMatchObject({ code: '22023' });
        await expect(client.query(`select * from ${schema}.maintain_message_partitions_as_of(null, now() + interval '1 year')`)).rejects.toMatchObject({ code: '42501' });
      } finally {
        await client.query('reset role');
        client.release();
      }

      // Running again with the same unit changes nothing; another unit is refused.
      expect((await migrate({ db: pool, schema, partitionBy: 'day' })).applied).toEqual([]);
      await expect(migrate({ db: pool, schema, partitionBy: 'week' })).rejects.toMatchObject({ code: 'MIGRATION_FAILED' });
    } finally {
      await pool.query(`drop schema ${schema} cascade; drop owned by ${role}; drop role ${role}; drop owned by ${owner}; drop role ${owner}`);
    }
  });

  it('bad partitioning options are refused before anything is touched', async () => {
    const schema = uniqueName('t').toLowerCase();
    await expect(migrate({ db: pool, schema, partitionBy: 'hour' as never })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    await expect(migrate({ db: pool, schema, partitionBy: 'day', partitionsAhead: 0 })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    await expect(migrate({ db: pool, schema, partitionsAhead: 3 })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    const { rows } = await pool.query(`select count(*)::int as n from pg_namespace where nspname = $1::text`, [schema]);
    expect(rows[0].n).toBe(0);
  });

  it('outbox-relay migrate --partition-by converts the outbox, and refuses bad flags with exit 2 changing nothing', async () => {
    const schema = uniqueName('t').toLowerCase();
    for (const flags of [['--partition-by', 'hour'], ['--partition-by', 'day', '--partitions-ahead', '0'], ['--partitions-ahead', '2'], ['--partition-by', 'day', '--partitions-ahead', '2x']]) {
      const result = await cli('migrate', '--schema', schema, ...flags);
      expect({ flags, code: result.code }).toEqual({ flags, code: 2 });
      expect(result.stderr).toMatch(/partition/);
    }
    const { rows } = await pool.query(`select count(*)::int as n from pg_namespace where nspname = $1::text`, [schema]);
    expect(rows[0].n).toBe(0);

    const done = await cli('migrate', '--schema', schema, '--partition-by', 'week', '--partitions-ahead', '2');
    expect(done.code).toBe(0);
    expect(done.stdout).toContain('partition_messages_by_time (week)');
    const { rows: bounds } = await pool.query(`select count(*)::int as n from ${schema}.message_partition_bounds() where not is_default`);
    expect(bounds[0].n).toBe(3); // the old table (to the end of this week) and two weeks ahead
    await pool.query(`drop schema ${schema} cascade`);
  });

  it('a relay publishes every row exactly once and in key order whichever partition holds it, and makes the partitions ahead', async () => {
    const { schema, topic } = await freshOutbox(3);
    const rows = (keyCount: number, n: number, tag: string) =>
      Array.from({ length: n }, (_, i) => ({ topic, key: `k${i % keyCount}`, payload: { tag, i } }));
    const ids = await inTransaction(pool, (client) => enqueue(client, rows(6, 60, 'before'), { schema }));
    // The first row of k0 is dead: k0's later rows wait, in every partition.
    await pool.query(`update ${schema}.messages set state = 'dead', attempts = 5, last_error = 'refused' where id = $1::bigint`, [ids[0]]);
    await migrate({ db: pool, schema, partitionBy: 'day' });
    for (const [offsetDays, tag] of [[1.5, 'tomorrow'], [400, 'far']] as const) {
      const { rows: inserted } = await pool.query<{ id: string }>(
        `insert into ${schema}.messages (topic, key, payload, created_at)
         select $1::text, 'k' || (g % 6), convert_to('{"tag":"' || $2::text || '"}', 'UTF8'), now() + $3::float8 * interval '1 day'
           from generate_series(0, 29) g returning id::text`,
        [topic, tag, offsetDays],
      );
      ids.push(...inserted.map((r) => r.id));
    }
    // The relay makes again a partition ahead that is missing.
    await pool.query(`drop table ${schema}.${partitionName(3)}`);

    const relay = createRelay(testRelayOptions(schema, { retention: { intervalMs: 60_000 } }));
    const reports: Array<{ created: string[] }> = [];
    relay.events.on('partitions', (r) => reports.push(r));
    await relay.start();
    try {
      await waitFor(() => reports.length > 0, { message: 'a partition maintenance run' });
      expect(reports[0]!.created).toEqual([partitionName(3)]);
      const held = (await pool.query(`select id::text from ${schema}.messages where key = 'k0' and id <> $1::bigint order by id`, [ids[0]])).rows.map((r) => r.id);
      await waitFor(
        async () => {
          const { rows: left } = await pool.query(`select count(*)::int as n from ${schema}.messages where state <> 'sent'`);
          return left[0].n === held.length + 1;
        },
        { message: 'every row but the dead one and its key sent', timeoutMs: 60_000 },
      );
      const { rows: waiting } = await pool.query(`select count(*)::int as n from ${schema}.messages where key = 'k0' and state = 'pending'`);
      expect(waiting[0].n).toBe(held.length);

      // An operator repairs the dead row: it goes first, then the rest of its key.
      await pool.query(`update ${schema}.messages set state = 'pending', attempts = 0, next_attempt_at = now() where id = $1::bigint`, [ids[0]]);
      await waitFor(
        async () => (await pool.query(`select count(*)::int as n from ${schema}.messages where state <> 'sent'`)).rows[0].n === 0,
        { message: 'all rows sent', timeoutMs: 60_000 },
      );
      const status = await collectStatus(pool, schema, undefined);
      expect(status.unsent).toMatchObject({ pending: 0, failed: 0, dead: 0 });
    } finally {
      await relay.stop();
    }
    await expectPublishedOnce(connection, topic, 3, ids, { expected: ids.length });
  });

  it('relays running while their outbox is partitioned go on exactly once and start keeping its partitions', async () => {
    const { schema, topic } = await freshOutbox(3);
    const write = (n: number) =>
      inTransaction(pool, (client) => enqueue(client, Array.from({ length: n }, (_, i) => ({ topic, key: `k${i % 5}`, payload: { i } })), { schema }));
    const relay = createRelay(testRelayOptions(schema, { retention: { intervalMs: 100 } }));
    const reports: Array<{ created: string[] }> = [];
    relay.events.on('partitions', (r) => reports.push(r));
    await relay.start();
    const ids: string[] = [];
    try {
      ids.push(...(await write(50)));
      await waitAllSent(pool, schema);
      await migrate({ db: pool, schema, partitionBy: 'day' });
      ids.push(...(await write(50)));
      await pool.query(`drop table ${schema}.${partitionName(3)}`);
      await waitFor(() => reports.some((r) => r.created.includes(partitionName(3))), { message: 'the running relay made the missing partition' });
      ids.push(...(await write(50)));
      await waitAllSent(pool, schema);
    } finally {
      await relay.stop();
    }
    await expectPublishedOnce(connection, topic, 3, ids, { expected: ids.length });
  });

  it('an expired partition is dropped only when it holds no row to keep (one in any state but sent, or sent within the period); one that does is kept', async () => {
    const schema = await freshSchema(pool);
    await migrate({ db: pool, schema, partitionBy: 'day' });
    const insert = async (created: Date, state: string, sentAt: Date | null, held = false) =>
      (
        await pool.query<{ id: string }>(
          `insert into ${schema}.messages (topic, key, payload, created_at, state, sent_at, kafka_partition, kafka_offset, held)
           values ('orders', 'k', 'x', $1::timestamptz, $2::text, $3::timestamptz, 0, 0, $4::boolean) returning id::text`,
          [created, state, sentAt, held],
        )
      ).rows[0]!.id;
    const first = `messages_before_${partitionName(1).slice('messages_p'.length)}`;
    await insert(day(0), 'sent', day(0.5)); // every row sent long ago: dropped
    const keep = [
      await insert(day(1.25), 'dead', null),
      await insert(day(2.25), 'sent', day(6)), // sent late: within the retention period at day 5
      await insert(day(3.25), 'pending', null),
    ];
    // Each state that must be kept keeps a partition on its own.
    for (const [state, held] of [['pending', true], ['failed', false], ['skipped', false]] as const) {
      const probe = await freshSchema(pool);
      await migrate({ db: pool, schema: probe, partitionBy: 'day' });
      await pool.query(`insert into ${probe}.messages (topic, payload, created_at, state, held) values ('orders', 'x', $1::timestamptz, $2::text, $3::boolean)`, [day(1.5), state, held]);
      const { rows } = await pool.query(`select action from ${probe}.maintain_message_partitions_as_of(interval '1 day', $1::timestamptz, 100) where partition_name = $2::text`, [
        day(5),
        partitionName(1),
      ]);
      expect({ state, held, rows }).toEqual({ state, held, rows: [{ action: 'kept' }] });
    }

    const { rows } = await pool.query<{ action: string; partition_name: string; detail: string | null }>(
      `select * from ${schema}.maintain_message_partitions_as_of(interval '1 day', $1::timestamptz, 100) where action <> 'created'`,
      [day(5)],
    );
    const kept = 'holds rows not sent, or sent within the retention period';
    expect(rows).toEqual([
      { action: 'dropped', partition_name: first, detail: null },
      { action: 'kept', partition_name: partitionName(1), detail: kept },
      { action: 'kept', partition_name: partitionName(2), detail: kept },
      { action: 'kept', partition_name: partitionName(3), detail: kept },
    ]);
    const { rows: left } = await pool.query<{ id: string }>(`select id::text from ${schema}.messages order by id`);
    expect(left.map((r) => r.id)).toEqual(keep);
  });

  it("the relay's retention deletes the sent rows of an expired partition kept for a dead row, and nothing else", async () => {
    const schema = await freshSchema(pool);
    await migrate({ db: pool, schema, partitionBy: 'day' });
    // A partition of days long past (as a DBA may attach one) in place of the first one.
    const first = `messages_before_${partitionName(1).slice('messages_p'.length)}`;
    await pool.query(`alter table ${schema}.messages detach partition ${schema}.${first}; drop table ${schema}.${first}`);
    await pool.query(`create table ${schema}.messages_old partition of ${schema}.messages for values from ($1) to ($2)`.replace('$1', `'${day(-10).toISOString()}'`).replace('$2', `'${day(-9).toISOString()}'`));
    await pool.query(`alter table ${schema}.messages_old add primary key (id)`);
    const { rows } = await pool.query<{ id: string; state: string }>(
      `insert into ${schema}.messages (topic, payload, created_at, state, sent_at, kafka_partition, kafka_offset)
       values ('orders', 'x', $1::timestamptz, 'dead', null, null, null), ('orders', 'x', $1::timestamptz, 'sent', $2::timestamptz, 0, 0),
              ('orders', 'x', $3::timestamptz, 'sent', $2::timestamptz, 0, 0)
       returning id::text, state`,
      [day(-9.5), day(-9.25), day(1.5)],
    );
    const deleted = await purgeSentRows(pool, schema, { keepMs: DAY, batchSize: 100, partitioned: true }, new AbortController().signal, createLogger({ level: 'silent' }));
    const { rows: left } = await pool.query<{ id: string }>(`select id::text from ${schema}.messages order by id`);
    // The dead row stays; so does the row of a partition not yet expired, however old its sending.
    expect({ deleted, left: left.map((r) => r.id) }).toEqual({ deleted: 1, left: [rows[0]!.id, rows[2]!.id] });
  });

  it('a range of which the default partition holds rows is left to it: the rows stay where they are, nothing is refused', async () => {
    const schema = await freshSchema(pool);
    await migrate({ db: pool, schema, partitionBy: 'day' });
    const { rows: inserted } = await pool.query(
      `insert into ${schema}.messages (topic, payload, created_at) values ('orders', 'x', $1::timestamptz) returning id::text, tableoid::regclass::text as part`,
      [day(10.5)],
    );
    expect(inserted[0].part).toBe(`${schema}.messages_default`);
    // A run takes one step unless told otherwise (the relay's runs do: no lock is held long).
    const { rows: one } = await pool.query(`select action, partition_name from ${schema}.maintain_message_partitions_as_of(null, $1::timestamptz)`, [day(8)]);
    expect(one).toEqual([{ action: 'created', partition_name: partitionName(8) }]);
    const { rows } = await pool.query(`select action, partition_name from ${schema}.maintain_message_partitions_as_of(null, $1::timestamptz, 100)`, [day(8)]);
    expect(rows).toEqual([
      { action: 'created', partition_name: partitionName(9) },
      { action: 'kept', partition_name: partitionName(10) },
      { action: 'created', partition_name: partitionName(11) },
    ]);
    const { rows: now } = await pool.query(`select id::text, tableoid::regclass::text as part from ${schema}.messages`);
    expect(now).toEqual([{ id: inserted[0].id, part: `${schema}.messages_default` }]);
  });

  it('maintenance refuses to run but at READ COMMITTED, where every statement sees what committed before it', async () => {
    const schema = await freshSchema(pool);
    await migrate({ db: pool, schema, partitionBy: 'day' });
    const client = await pool.connect();
    try {
      await client.query('begin isolation level repeatable read');
      await expect(client.query(`select * from ${schema}.maintain_message_partitions(null)`)).rejects.toMatchObject({ code: '25000' });
    } finally {
      await client.query('rollback');
      client.release();
    }
  });

  it('row-by-row retention of a partitioned outbox deletes from its default partition only', async () => {
    const schema = await freshSchema(pool);
    await migrate({ db: pool, schema, partitionBy: 'day' });
    const longAgo = new Date(Date.now() - 10 * DAY);
    for (const created of [new Date(), day(400)]) {
      await pool.query(
        `insert into ${schema}.messages (topic, payload, created_at, state, sent_at, kafka_partition, kafka_offset)
         values ('orders', 'x', $1::timestamptz, 'sent', $2::timestamptz, 0, 0)`,
        [created, longAgo],
      );
    }
    const deleted = await purgeSentRows(pool, schema, { keepMs: DAY, batchSize: 100, partitioned: true }, new AbortController().signal, createLogger({ level: 'silent' }));
    expect(deleted).toBe(1);
    const { rows } = await pool.query(`select tableoid::regclass::text as part from ${schema}.messages`);
    expect(rows).toEqual([{ part: `${schema}.messages_before_${partitionName(1).slice('messages_p'.length)}` }]);
  });

  it('a writer still inserting into an expired partition is waited for, never lost: the run stops and the next one keeps the partition', async () => {
    const schema = await freshSchema(pool);
    await migrate({ db: pool, schema, partitionBy: 'day' });
    // This session has no lock timeout of its own: without the function's, the run would wait for the writer.
    const writer = new pg.Client({ connectionString: databaseUrl() });
    await writer.connect();
    try {
      await pool.query(`select count(*) from ${schema}.maintain_message_partitions_as_of(null, $1::timestamptz, 100)`, [day(4)]);
      await writer.query('begin');
      const { rows: written } = await writer.query<{ id: string }>(
        `insert into ${schema}.messages (topic, payload, created_at) values ('orders', 'x', $1::timestamptz) returning id::text`,
        [day(1.5)],
      );
      const first = `messages_before_${partitionName(1).slice('messages_p'.length)}`;
      const run = async () =>
        (await pool.query(`select action, partition_name from ${schema}.maintain_message_partitions_as_of(interval '1 day', $1::timestamptz, 100)`, [day(4)])).rows;
      // The first expired partition's drop waits for the writer's lock, gives up, and the run stops there.
      expect(await run()).toEqual([{ action: 'busy', partition_name: first }]);
      await writer.query('commit');
      expect(await run()).toEqual([
        { action: 'dropped', partition_name: first },
        { action: 'kept', partition_name: partitionName(1) },
        { action: 'dropped', partition_name: partitionName(2) },
      ]);
      const { rows } = await pool.query(`select id::text, state, tableoid::regclass::text as part from ${schema}.messages`);
      expect(rows).toEqual([{ id: written[0]!.id, state: 'pending', part: `${schema}.${partitionName(1)}` }]);
    } finally {
      await writer.end();
    }
  });

  it('maintenance keeps UTC bounds whatever the session time zone, across a daylight saving change and short months', async () => {
    const zoned = (timeZone: string) => new pg.Pool({ connectionString: databaseUrl(), max: 1, options: `-c TimeZone=${timeZone} -c DateStyle=SQL,DMY` });
    const berlin = zoned('Europe/Berlin');
    const newYork = zoned('America/New_York');
    try {
      const daily = await freshSchema(pool);
      await migrate({ db: berlin, schema: daily, partitionBy: 'day' });
      // Clocks in Berlin move forward on 2027-03-28.
      await berlin.query(`select count(*) from ${daily}.maintain_message_partitions_as_of(null, '2027-03-26 12:00+00', 100)`);
      const monthly = uniqueName('t').toLowerCase();
      await migrate({ db: newYork, schema: monthly, partitionBy: 'month', partitionsAhead: 4 });
      for (const [schema, db, from] of [[daily, berlin, '2027-03-26'], [monthly, newYork, '-infinity']] as const) {
        const { rows } = await db.query<{ lower: string | null; upper: string }>(
          `select to_char(lower_bound at time zone 'UTC', 'YYYY-MM-DD HH24:MI') as lower, to_char(upper_bound at time zone 'UTC', 'YYYY-MM-DD HH24:MI') as upper
             from ${schema}.message_partition_bounds() where not is_default and lower_bound >= $1::timestamptz order by lower_bound`,
          [from],
        );
        expect(rows.length, schema).toBe(schema === daily ? 4 : 5);
        for (const [i, r] of rows.entries()) {
          expect(r.upper, `${schema} bounds at UTC midnight`).toMatch(/ 00:00$/);
          if (i > 0) expect(r.lower, `${schema}: no gap or overlap`).toBe(rows[i - 1]!.upper);
        }
      }
      const { rows: months } = await pool.query(`select upper_bound from ${monthly}.message_partition_bounds() where not is_default order by lower_bound`);
      expect(months.map((m) => (m.upper_bound as Date).getUTCDate())).toEqual(months.map(() => 1));
      await pool.query(`drop schema ${monthly} cascade`);
    } finally {
      await berlin.end();
      await newYork.end();
    }
  });
});
