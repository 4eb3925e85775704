import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { migrate } from '../../src/db/migrate.js';
import { createLogger } from '../../src/log.js';
import { collectStatus } from '../../src/ops/status.js';
import { purgeSentRows } from '../../src/relay/retention.js';
import { createRelay } from '../../src/relay/relay.js';
import { enqueue } from '../../src/outbox/enqueue.js';
import { cli } from '../helpers/cli.js';
import { databaseUrl, freshSchema, inTransaction } from '../helpers/db.js';
import { freshTopic, readTopic } from '../helpers/kafka.js';
import { expectExactlyOnce, expectPerKeyOrder, testRelayOptions, waitAllSent } from '../helpers/relay.js';
import { useTestServices } from '../helpers/services.js';
import { uniqueName, waitFor } from '../helpers/wait.js';

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
  const { connection, pool, admin } = useTestServices();

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
      // Dated after the current unit (an explicit created_at): they leave the first partition, keeping their ids.
      await pool.query(`update ${schema}.messages set created_at = 'infinity' where id = $1::bigint`, [ids[10]]);
      await pool.query(`update ${schema}.messages set created_at = now() + interval '10 years' where id = $1::bigint`, [ids[11]]);
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

      const { rows: later } = await pool.query(`select id::text, tableoid::regclass::text as part from ${schema}.messages where id = any($1::bigint[]) order by id`, [
        [ids[10], ids[11]],
      ]);
      expect(later).toEqual([
        { id: ids[10], part: `${schema}.messages_default` },
        { id: ids[11], part: `${schema}.messages_default` },
      ]);
      const { rows: owners } = await pool.query(
        `select (select relowner::regrole::text from pg_class where oid = $1::regclass) as tbl,
                (select proowner::regrole::text from pg_proc where oid = $2::regprocedure) as fn`,
        [`${schema}.messages`, `${schema}.maintain_message_partitions(interval, timestamptz)`],
      );
      expect(owners[0]).toEqual({ tbl: owner, fn: owner });
      const { rows: triggers } = await pool.query(`select tgname from pg_trigger where tgrelid = $1::regclass and not tgisinternal order by 1`, [`${schema}.messages`]);
      expect(triggers.map((t) => t.tgname)).toEqual(['messages_headers_unreserved', 'messages_notify']);
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
      const { rows: grants } = await pool.query(
        `select has_table_privilege($1::text, $2::text, 'select with grant option') as sel,
                has_column_privilege($1::text, $2::text, 'state', 'update') as upd_state,
                has_table_privilege($1::text, $2::text, 'update') as upd, has_table_privilege($1::text, $2::text, 'delete') as del`,
        [role, `${schema}.messages`],
      );
      expect(grants[0]).toEqual({ sel: true, upd_state: true, upd: false, del: false });
      // A role without DDL rights (a relay's) may keep the partitions: the function runs as the owner.
      const client = await pool.connect();
      try {
        await client.query(`set role ${role}`);
        const { rows: made } = await client.query(`select action from ${schema}.maintain_message_partitions(null, now() + interval '2 days')`);
        expect(made).toEqual([{ action: 'created' }, { action: 'created' }]);
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
    const schema = await freshSchema(pool);
    const topic = await freshTopic(admin, 3);
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
    const read = await readTopic(connection, topic, 3, { expected: ids.length });
    expectExactlyOnce(read, ids);
    expectPerKeyOrder(read);
  });

  it('relays running while their outbox is partitioned go on exactly once and start keeping its partitions', async () => {
    const schema = await freshSchema(pool);
    const topic = await freshTopic(admin, 3);
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
    const read = await readTopic(connection, topic, 3, { expected: ids.length });
    expectExactlyOnce(read, ids);
    expectPerKeyOrder(read);
  });

  it('an expired partition is dropped, the rows it must keep (not sent, or sent within the retention period) moved to the default partition with their ids', async () => {
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
    const keep = [
      await insert(day(0), 'dead', null), // in the first partition, with the history before the conversion
      await insert(day(2.25), 'sent', day(6)), // sent late: within the retention period at day 5
      await insert(day(3.25), 'pending', null),
      await insert(day(3.3), 'pending', null, true),
      await insert(day(3.4), 'failed', null),
      await insert(day(3.5), 'skipped', null),
    ];
    const gone = [await insert(day(0.5), 'sent', day(0.75)), await insert(day(1.25), 'sent', day(1.5))];

    const { rows } = await pool.query<{ action: string; partition_name: string; detail: string | null }>(
      `select * from ${schema}.maintain_message_partitions(interval '1 day', $1::timestamptz) where action <> 'created'`,
      [day(5)],
    );
    expect(rows).toEqual([
      { action: 'dropped', partition_name: `messages_before_${partitionName(1).slice('messages_p'.length)}`, detail: '1 row not sent or sent within the retention period moved to messages_default' },
      { action: 'dropped', partition_name: partitionName(1), detail: null },
      { action: 'dropped', partition_name: partitionName(2), detail: '1 row not sent or sent within the retention period moved to messages_default' },
      { action: 'dropped', partition_name: partitionName(3), detail: '4 rows not sent or sent within the retention period moved to messages_default' },
    ]);
    const { rows: left } = await pool.query<{ id: string; part: string }>(`select id::text, tableoid::regclass::text as part from ${schema}.messages order by id`);
    expect(left).toEqual(keep.map((id) => ({ id, part: `${schema}.messages_default` })));
    expect(left.map((r) => r.id)).not.toContain(gone[0]);
    expect(await partitions(schema)).toEqual([5, 6, 7, 8].map(partitionName).concat('messages_default'));
  });

  it('an expired partition holding more rows to keep than one run moves stays until fewer', async () => {
    const schema = await freshSchema(pool);
    await migrate({ db: pool, schema, partitionBy: 'day' });
    await pool.query(`insert into ${schema}.messages (topic, payload, created_at) select 'orders', 'x', $1::timestamptz from generate_series(1, 10001)`, [day(1.5)]);
    const { rows } = await pool.query(
      `select action, detail from ${schema}.maintain_message_partitions(interval '1 day', $1::timestamptz) where partition_name = $2::text`,
      [day(4), partitionName(1)],
    );
    expect(rows).toEqual([{ action: 'busy', detail: 'holds 10001 rows not sent or sent within the retention period, more than one run moves: dropped when fewer' }]);
    const { rows: count } = await pool.query(`select count(*)::int as n from ${schema}.${partitionName(1)}`);
    expect(count[0].n).toBe(10_001);
  });

  it('rows of a range the default partition took move into its partition when it is made', async () => {
    const schema = await freshSchema(pool);
    await migrate({ db: pool, schema, partitionBy: 'day' });
    const { rows: inserted } = await pool.query(
      `insert into ${schema}.messages (topic, payload, created_at) values ('orders', 'x', $1::timestamptz) returning id::text, tableoid::regclass::text as part`,
      [day(10.5)],
    );
    expect(inserted[0].part).toBe(`${schema}.messages_default`);
    const { rows } = await pool.query(`select action, detail from ${schema}.maintain_message_partitions(null, $1::timestamptz) where partition_name = $2::text`, [
      day(8),
      partitionName(10),
    ]);
    expect(rows).toEqual([{ action: 'created', detail: '1 row of its range moved in from messages_default' }]);
    const { rows: now } = await pool.query(`select id::text, tableoid::regclass::text as part from ${schema}.messages`);
    expect(now).toEqual([{ id: inserted[0].id, part: `${schema}.${partitionName(10)}` }]);
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

  it('a writer still inserting into an expired partition is waited for, never lost: the drop is left for the next run', async () => {
    const schema = await freshSchema(pool);
    await migrate({ db: pool, schema, partitionBy: 'day' });
    // This session has no lock timeout of its own: without the function's, the run would wait for the writer.
    const writer = new pg.Client({ connectionString: databaseUrl() });
    await writer.connect();
    try {
      await writer.query('begin');
      const { rows: written } = await writer.query<{ id: string }>(
        `insert into ${schema}.messages (topic, payload, created_at) values ('orders', 'x', $1::timestamptz) returning id::text`,
        [day(1.5)],
      );
      const run = () =>
        pool.query(`select action, detail from ${schema}.maintain_message_partitions(interval '1 day', $1::timestamptz) where partition_name = $2::text`, [
          day(4),
          partitionName(1),
        ]);
      expect((await run()).rows).toEqual([{ action: 'busy', detail: 'the table was locked; dropped at the next run' }]);
      await writer.query('commit');
      expect((await run()).rows).toEqual([{ action: 'dropped', detail: '1 row not sent or sent within the retention period moved to messages_default' }]);
      const { rows } = await pool.query(`select id::text, state, tableoid::regclass::text as part from ${schema}.messages`);
      expect(rows).toEqual([{ id: written[0]!.id, state: 'pending', part: `${schema}.messages_default` }]);
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
      await berlin.query(`select count(*) from ${daily}.maintain_message_partitions(null, '2027-03-26 12:00+00')`);
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
