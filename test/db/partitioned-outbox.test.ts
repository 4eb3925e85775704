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
import { expectExactlyOnce, expectPerKeyOrder, testRelayOptions } from '../helpers/relay.js';
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

  it('converting keeps every row, the id sequence, the indexes, the triggers and the grants', async () => {
    const schema = await freshSchema(pool);
    const role = uniqueName('reader').toLowerCase();
    await pool.query(`create role ${role} nologin`);
    try {
      await pool.query(`grant usage on schema ${schema} to ${role}; grant select, update on ${schema}.messages to ${role}`);
      const ids = await inTransaction(pool, (client) =>
        enqueue(client, Array.from({ length: 20 }, (_, i) => ({ topic: 'orders', key: `k${i % 4}`, payload: { i } })), { schema }),
      );
      await pool.query(`update ${schema}.messages set state = 'sent', sent_at = now(), kafka_partition = 0, kafka_offset = id where id <= $1::bigint`, [ids[9]]);
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
      ]);
      // The headers check still refuses what the relay sets itself.
      await expect(pool.query(`insert into ${schema}.messages (topic, payload, headers) values ('orders', 'x', '{"outbox-id": "1"}')`)).rejects.toMatchObject({
        code: '23514',
      });
      const { rows: grants } = await pool.query(
        `select has_table_privilege($1::text, $2::text, 'select') as sel, has_table_privilege($1::text, $2::text, 'update') as upd, has_table_privilege($1::text, $2::text, 'delete') as del`,
        [role, `${schema}.messages`],
      );
      expect(grants[0]).toEqual({ sel: true, upd: true, del: false });

      // Running again with the same unit changes nothing; another unit is refused.
      expect((await migrate({ db: pool, schema, partitionBy: 'day' })).applied).toEqual([]);
      await expect(migrate({ db: pool, schema, partitionBy: 'week' })).rejects.toMatchObject({ code: 'MIGRATION_FAILED' });
    } finally {
      await pool.query(`drop owned by ${role}; drop role ${role}`);
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

  it('an expired partition is dropped only when every row in it was sent before the retention period', async () => {
    const schema = await freshSchema(pool);
    await migrate({ db: pool, schema, partitionBy: 'day' });
    const insert = (created: Date, state: string, sentAt: Date | null) =>
      pool.query(
        `insert into ${schema}.messages (topic, key, payload, created_at, state, sent_at, kafka_partition, kafka_offset)
         values ('orders', 'k', 'x', $1::timestamptz, $2::text, $3::timestamptz, 0, 0)`,
        [created, state, sentAt],
      );
    await insert(day(0), 'dead', null); // the first partition: a dead row keeps it
    await insert(day(1.25), 'sent', day(1.5)); // expired, every row sent long ago: dropped
    await insert(day(2.25), 'sent', day(6)); // expired, but sent within the period (late): kept
    await insert(day(3.25), 'pending', null); // expired, still to send: kept
    await insert(day(3.5), 'skipped', null);

    const { rows } = await pool.query<{ action: string; partition_name: string; detail: string | null }>(
      `select * from ${schema}.maintain_message_partitions(interval '1 day', $1::timestamptz)`,
      [day(5)],
    );
    expect(rows.filter((r) => r.action === 'dropped').map((r) => r.partition_name)).toEqual([partitionName(1)]);
    expect(rows.filter((r) => r.action === 'kept').map((r) => [r.partition_name, r.detail])).toEqual([
      [`messages_before_${partitionName(1).slice('messages_p'.length)}`, 'holds rows not sent'],
      [partitionName(2), 'holds rows sent within the retention period'],
      [partitionName(3), 'holds rows not sent'],
    ]);
    const { rows: left } = await pool.query(`select state, count(*)::int as n from ${schema}.messages group by state order by state`);
    expect(left).toEqual([
      { state: 'dead', n: 1 },
      { state: 'pending', n: 1 },
      { state: 'sent', n: 1 },
      { state: 'skipped', n: 1 },
    ]);
    expect(await partitions(schema)).toContain(partitionName(8));
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

  it('dropping an expired partition never waits long behind a lock: it is kept and tried again', async () => {
    const schema = await freshSchema(pool);
    await migrate({ db: pool, schema, partitionBy: 'day' });
    // This session has no lock timeout of its own: without the function's, the drop would wait for the blocker.
    const blocker = new pg.Client({ connectionString: databaseUrl() });
    await blocker.connect();
    try {
      await blocker.query(`begin; select count(*) from ${schema}.${partitionName(1)}`);
      const { rows } = await pool.query<{ action: string; partition_name: string; detail: string | null }>(
        `select * from ${schema}.maintain_message_partitions(interval '1 day', $1::timestamptz) where partition_name = $2::text`,
        [day(4), partitionName(1)],
      );
      expect(rows).toEqual([{ action: 'kept', partition_name: partitionName(1), detail: 'busy; tried again at the next run' }]);
      await blocker.query('rollback');
      const again = await pool.query(`select action from ${schema}.maintain_message_partitions(interval '1 day', $1::timestamptz) where partition_name = $2::text`, [
        day(4),
        partitionName(1),
      ]);
      expect(again.rows).toEqual([{ action: 'dropped' }]);
    } finally {
      await blocker.end();
    }
  });
});
