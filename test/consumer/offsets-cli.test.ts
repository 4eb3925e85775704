import { describe, expect, it } from 'vitest';
import { HEADER } from '../../src/outbox/event.js';
import { cli } from '../support/cli.js';
import { freshSchema } from '../support/db.js';
import { freshTopic } from '../support/kafka.js';
import { uniqueName, waitFor } from '../support/wait.js';
import { useTestServices } from '../support/services.js';

describe('consumer: offsets CLI', () => {
  const { pool, admin, producer, startConsumer, freshOutbox } = useTestServices();

  it('rewind to a time re-applies exactly the records from that time on, picked up by the running consumer', { timeout: 90_000 }, async () => {
    const schema = await freshSchema(pool);
    // An idempotent projection (last value per key) that also counts applications.
    await pool.query(`create table "${schema}".projection (key text primary key, value text not null, applications int not null)`);
    const topic = await freshTopic(admin, 2);
    const groupId = uniqueName('g');
    // With both headers the inbox records each record applied, so the rewind has inbox entries to forget.
    const event = (i: number) => ({ key: `k${i}`, value: `v${i}`, headers: { [HEADER.source]: 'orders-db', [HEADER.outboxId]: String(i) } });

    const before = Array.from({ length: 10 }, (_, i) => i);
    await producer.send(topic, before.map(event));
    const rewindTo = Date.now() + 1;
    await waitFor(() => Date.now() > rewindTo, { timeoutMs: 1_000 });
    const after = Array.from({ length: 10 }, (_, i) => i + 10);
    await producer.send(topic, after.map(event));

    const consumer = await startConsumer({
      schema,
      groupId,
      topics: [topic],
      handler: async (record, tx) => {
        await tx.query(
          `insert into "${schema}".projection (key, value, applications) values ($1::text, $2::text, 1)
           on conflict (key) do update set value = excluded.value, applications = projection.applications + 1`,
          [record.key!.toString(), record.value!.toString()],
        );
      },
    });
    const applications = async () => {
      const { rows } = await pool.query<{ key: string; applications: number }>(`select key, applications from "${schema}".projection`);
      return new Map(rows.map((r) => [r.key, r.applications]));
    };
    const total = async () => [...(await applications()).values()].reduce((a, b) => a + b, 0);
    await waitFor(async () => (await total()) === 20, { timeoutMs: 30_000 });

    const shown = await cli('offsets', 'show', '--group', groupId, '--schema', schema);
    expect(shown.code).toBe(0);
    expect(shown.stdout.trim().split('\n')).toHaveLength(3); // header + 2 partitions
    const shownJson = await cli('offsets', 'show', '--group', groupId, '--schema', schema, '--json');
    expect(shownJson.code).toBe(0);
    const json = JSON.parse(shownJson.stdout) as { group: string; offsets: Array<Record<string, unknown>> };
    expect(json.group).toBe(groupId);
    expect(json.offsets.map((o) => o.partition).sort()).toEqual([0, 1]);
    for (const o of json.offsets) expect(o).toMatchObject({ topic, nextOffset: expect.any(Number), updatedAt: expect.any(String) });
    const { rows: stored } = await pool.query(`select partition, next_offset::int as n from "${schema}".consumer_offsets where group_id = $1 order by partition`, [groupId]);
    expect(json.offsets.map((o) => ({ partition: o.partition, n: o.nextOffset }))).toEqual(stored);

    const rewound = await cli('offsets', 'rewind', '--group', groupId, '--topic', topic, '--to-time', new Date(rewindTo).toISOString(), '--schema', schema, '--reason', 'projection fixed: apply again', '--actor', 'oncall');
    expect(rewound.stderr).toBe('');
    expect(rewound.code).toBe(0);
    const { rows: audit } = await pool.query(`select actor, command, reason, filter, counts from "${schema}".operator_actions`);
    expect(audit).toEqual([
      {
        actor: 'oncall',
        command: 'offsets rewind',
        reason: 'projection fixed: apply again',
        filter: { group: groupId, topic, partition: null, toTime: new Date(rewindTo).toISOString() },
        counts: { changed: 2, inboxForgotten: 10 },
      },
    ]);

    // The running consumer notices the moved offset and applies the later records again (the
    // inbox entries at or after the new offsets were forgotten with the rewind).
    await waitFor(async () => (await total()) === 30, { timeoutMs: 30_000, message: 'later records applied again' });
    await consumer.stop();
    const counts = await applications();
    expect(before.map((i) => counts.get(`k${i}`))).toEqual(before.map(() => 1));
    expect(after.map((i) => counts.get(`k${i}`))).toEqual(after.map(() => 2));
    expect(await total()).toBe(30);
  });

  it('rewind only moves offsets back and never creates offsets for partitions the group never consumed', { timeout: 60_000 }, async () => {
    const { schema, topic } = await freshOutbox(2);
    const groupId = uniqueName('g');
    // Partition 0 consumed up to 40; partition 1 never consumed by this group.
    await pool.query(`insert into "${schema}".consumer_offsets (group_id, topic, partition, next_offset) values ($1, $2, 0, 40)`, [groupId, topic]);
    // The time maps to the end of each (empty) partition, 0: partition 0 moves back to 0,
    // partition 1 stays without a row.
    const rewind = (...extra: string[]) =>
      cli('offsets', 'rewind', '--schema', schema, '--group', groupId, '--topic', topic, '--to-time', new Date(Date.now() - 1000).toISOString(), ...extra);
    const offsets = async () =>
      (await pool.query(`select partition, next_offset::int as n from "${schema}".consumer_offsets where group_id = $1 order by partition`, [groupId])).rows;
    const audited = async () => (await pool.query(`select command, counts from "${schema}".operator_actions`)).rows;

    // A dry run prints the change and makes none, nor an audit row.
    const dry = await rewind('--dry-run', '--json');
    expect(dry.code).toBe(0);
    expect(JSON.parse(dry.stdout)).toEqual({ action: 'rewind', group: groupId, dryRun: true, changed: [{ topic, partition: 0, previous: 40, next: 0 }] });
    expect(await offsets()).toEqual([{ partition: 0, n: 40 }]);
    expect(await audited()).toEqual([]);

    const back = await rewind('--reason', 'r');
    expect(back.code).toBe(0);
    expect(back.stdout).toContain(`${topic}[0]: 40 -> 0`);
    expect(await offsets()).toEqual([{ partition: 0, n: 0 }]);
    // A second rewind to the same point changes nothing (never forward, idempotent), and
    // is not audited: only the first one is.
    const again = await rewind('--reason', 'r');
    expect(again.code).toBe(0);
    expect(again.stdout).not.toContain('->');
    expect(again.stdout).toContain(`no partition of group ${groupId} moved (a rewind never moves an offset forward); nothing recorded`);
    expect(await audited()).toEqual([{ command: 'offsets rewind', counts: { changed: 1, inboxForgotten: 0 } }]);
  });

  it('set writes one partition and its audit row in one step, and a dry run writes neither', { timeout: 60_000 }, async () => {
    const { schema, topic } = await freshOutbox(2);
    const groupId = uniqueName('g');
    await pool.query(`insert into "${schema}".consumer_offsets (group_id, topic, partition, next_offset) values ($1, $2, 1, 7)`, [groupId, topic]);
    const set = (...extra: string[]) => cli('offsets', 'set', '--schema', schema, '--group', groupId, '--topic', topic, '--partition', '1', '--offset', '0', '--json', ...extra);
    const stored = async () => (await pool.query(`select partition, next_offset::int as n from "${schema}".consumer_offsets where group_id = $1`, [groupId])).rows;
    const audited = async () => (await pool.query(`select actor, command, row_ids::text[] as ids, filter, reason, counts from "${schema}".operator_actions`)).rows;

    const dry = await set('--dry-run');
    expect(dry.code).toBe(0);
    expect(JSON.parse(dry.stdout)).toEqual({ action: 'set', group: groupId, dryRun: true, changed: [{ topic, partition: 1, previous: 7, next: 0 }] });
    expect(await stored()).toEqual([{ partition: 1, n: 7 }]);
    expect(await audited()).toEqual([]);

    const done = await set('--reason', 'records refunded by hand', '--actor', 'oncall');
    expect(done.code).toBe(0);
    expect(JSON.parse(done.stdout)).toEqual({ action: 'set', group: groupId, dryRun: false, changed: [{ topic, partition: 1, previous: 7, next: 0 }] });
    expect(await stored()).toEqual([{ partition: 1, n: 0 }]);
    expect(await audited()).toEqual([
      { actor: 'oncall', command: 'offsets set', ids: [], filter: { group: groupId, topic, partition: 1, offset: 0 }, reason: 'records refunded by hand', counts: { changed: 1, inboxForgotten: 0 } },
    ]);
    // Without --json it says what moved and that it was recorded.
    const plain = await cli('offsets', 'set', '--schema', schema, '--group', groupId, '--topic', topic, '--partition', '0', '--offset', '0', '--reason', 'r', '--actor', 'oncall');
    expect(plain.code).toBe(0);
    expect(plain.stdout).toContain(`${topic}[0]: (none) -> 0`);
    expect(plain.stdout).toContain(`changed 1 partition(s) of group ${groupId}; recorded in operator_actions as oncall`);
  });

  it('refuses bad input with a typed error and exit code 2', { timeout: 60_000 }, async () => {
    const { schema, topic } = await freshOutbox(1);
    const groupId = uniqueName('g');
    await pool.query(`insert into "${schema}".consumer_offsets (group_id, topic, partition, next_offset) values ($1, $2, 0, 0)`, [groupId, topic]);
    const base = ['--schema', schema, '--reason', 'r'];

    const negative = await cli('offsets', 'set', '--group', groupId, '--topic', topic, '--partition', '0', '--offset=-1', ...base);
    expect(negative.code).toBe(2);
    expect(negative.stderr).toContain('INVALID_ARGUMENT');

    const unknownGroup = await cli('offsets', 'set', '--group', uniqueName('nobody'), '--topic', topic, '--partition', '0', '--offset', '0', ...base);
    expect(unknownGroup.code).toBe(2);
    expect(unknownGroup.stderr).toContain('NOT_FOUND');

    const unknownTopic = await cli('offsets', 'rewind', '--group', groupId, '--topic', uniqueName('missing').replaceAll('_', '-'), '--to-time', '2020-01-01T00:00:00Z', ...base);
    expect(unknownTopic.code).toBe(2);
    expect(unknownTopic.stderr).toContain('NOT_FOUND');

    const future = await cli('offsets', 'rewind', '--group', groupId, '--topic', topic, '--to-time', new Date(Date.now() + 3_600_000).toISOString(), ...base);
    expect(future.code).toBe(2);
    expect(future.stderr).toMatch(/future.*INVALID_ARGUMENT/);

    const notATime = await cli('offsets', 'rewind', '--group', groupId, '--topic', topic, '--to-time', 'yesterday', ...base);
    expect(notATime.code).toBe(2);
    expect(notATime.stderr).toContain('INVALID_ARGUMENT');

    // Nothing was changed by the refused commands.
    const { rows } = await pool.query(`select next_offset from "${schema}".consumer_offsets where group_id = $1`, [groupId]);
    expect(rows.map((r) => Number(r.next_offset))).toEqual([0]);
    expect((await pool.query(`select 1 from "${schema}".operator_actions`)).rowCount).toBe(0);

    const help = await cli('offsets', '--help');
    expect(help.code).toBe(0);
    expect(help.stdout).toContain('offsets rewind');
  });
});
