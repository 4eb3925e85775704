import { describe, expect, it } from 'vitest';
import type { RecordHandler } from '../../src/consumer/index.js';
import { cli } from '../support/cli.js';
import { useTestServices } from '../support/services.js';
import { uniqueName, waitFor } from '../support/wait.js';
import { effectCounts, effectHandler, exactlyOnceReport } from '../support/consumer.js';

describe('outbox-relay dead-letters: the consumer side of on-call', () => {
  const { pool, producer, freshEffects, startConsumer } = useTestServices();

  it('a replay requested from the CLI is run by the running consumer through its handler, once; a discard settles one for audit', { timeout: 60_000 }, async () => {
    const { schema, topic } = await freshEffects(1);
    const groupId = uniqueName('ledger');
    const broken = new Set(['r3', 'r6']);
    const apply = effectHandler(schema);
    const handler: RecordHandler = async (record, tx) => {
      if (broken.has(record.value!.toString())) throw new Error(`ledger rejected ${record.value!.toString()}`);
      await apply(record, tx);
    };
    const keys = Array.from({ length: 8 }, (_, i) => `r${i}`);
    await producer.send(topic, keys.map((k) => ({ key: k, value: k })));
    await startConsumer({ schema, groupId, topics: [topic], maxAttempts: 2, retryMinDelayMs: 10, retryMaxDelayMs: 20, handler });
    await waitFor(async () => (await effectCounts(pool, schema)).size === 6, { message: 'six applied, two dead-lettered' });

    const listed = await cli('dead-letters', 'list', '--group', groupId, '--json', '--schema', schema);
    expect(listed.code).toBe(0);
    const pending = JSON.parse(listed.stdout).deadLetters as Array<{ id: string; offset: string; error: string }>;
    expect(pending.map((d) => d.offset).sort()).toEqual(['3', '6']);
    const [six, three] = pending; // newest first
    expect(three!.error).toMatch(/ledger rejected r3/);
    const shown = JSON.parse((await cli('dead-letters', 'show', three!.id, '--group', groupId, '--json', '--schema', schema)).stdout);
    expect(shown).toMatchObject({ id: three!.id, topic, offset: '3', value: { bytes: 2, preview: 'r3', encoding: 'utf8' } });

    // r3 is fixed and replayed; r6 is discarded.
    broken.delete('r3');
    const replay = await cli('dead-letters', 'replay', three!.id, '--group', groupId, '--reason', 'ledger fixed', '--actor', 'oncall-2', '--schema', schema);
    expect(replay.code).toBe(0);
    expect(replay.stdout).toContain(`a running consumer of group ${groupId} replays them within seconds`);
    const discard = await cli('dead-letters', 'discard', six!.id, '--group', groupId, '--reason', 'refunded by hand', '--json', '--schema', schema);
    expect(JSON.parse(discard.stdout)).toMatchObject({ action: 'discard', changed: 1, ids: [six!.id] });

    await waitFor(async () => (await effectCounts(pool, schema)).size === 7, { message: 'the running consumer replayed r3' });
    const { rows } = await pool.query(`select id::text, replayed_at is not null as replayed, replay_requested_at, discarded_at is not null as discarded, discard_reason from ${schema}.dead_letters order by id`);
    expect(rows).toEqual([
      { id: three!.id, replayed: true, replay_requested_at: null, discarded: false, discard_reason: null },
      { id: six!.id, replayed: false, replay_requested_at: null, discarded: true, discard_reason: 'refunded by hand' },
    ]);
    expect(exactlyOnceReport(await effectCounts(pool, schema), keys.filter((k) => k !== 'r6'))).toEqual({ duplicates: [], missing: [], unexpected: [] });
    expect(JSON.parse((await cli('dead-letters', 'list', '--group', groupId, '--json', '--schema', schema)).stdout).deadLetters).toEqual([]);
    const { rows: audit } = await pool.query(`select actor, command, row_ids::text[] as ids, reason from ${schema}.operator_actions order by id`);
    expect(audit).toMatchObject([
      { actor: 'oncall-2', command: 'dead-letters replay', ids: [three!.id], reason: 'ledger fixed' },
      { command: 'dead-letters discard', ids: [six!.id], reason: 'refunded by hand' },
    ]);

    // Bad input changes nothing.
    for (const args of [
      ['dead-letters', 'replay', three!.id, '--group', groupId, '--reason', 'again'], // already replayed
      ['dead-letters', 'replay', '424242', '--group', groupId, '--reason', 'r'],
      ['dead-letters', 'replay', 'x1', '--group', groupId, '--reason', 'r'],
      ['dead-letters', 'discard', six!.id, '--group', groupId], // no reason
      ['dead-letters', 'list', '--group', 'no-such-group'],
      ['dead-letters', 'list', '--group', groupId, '--topic', 'no-such-topic'],
      ['dead-letters', 'list'],
      ['dead-letters', 'purge', '--group', groupId],
    ]) {
      const result = await cli(...args, '--schema', schema);
      expect({ args, code: result.code }).toEqual({ args, code: 2 });
    }
    expect((await pool.query(`select count(*)::int as n from ${schema}.operator_actions`)).rows[0].n).toBe(2);
  });

  it('a dead-lettered record applied again after a rewind settles its dead letter, so a replay does not apply it twice', async () => {
    const { schema, topic } = await freshEffects(1);
    await producer.send(topic, ['x0', 'x1', 'x2'].map((k) => ({ key: k, value: k })));
    let broken = true;
    const apply = effectHandler(schema);
    const groupId = uniqueName('g');
    const consumer = await startConsumer({
      schema,
      groupId,
      topics: [topic],
      inbox: false,
      maxAttempts: 1,
      handler: async (record, tx) => {
        if (broken && record.value!.toString() === 'x1') throw new Error('handler bug');
        await apply(record, tx);
      },
    });
    await waitFor(async () => (await effectCounts(pool, schema)).size === 2, { timeoutMs: 30_000 });
    // The bug is fixed, and the operator rewinds the partition to repair the data.
    broken = false;
    await pool.query(`update "${schema}".consumer_offsets set next_offset = 0 where group_id = $1`, [groupId]);
    await waitFor(async () => (await effectCounts(pool, schema)).get('x1') === 1, { timeoutMs: 30_000, message: 'x1 applied after the rewind' });
    const replay = await consumer.replayDeadLetters();
    await consumer.stop();
    const counts = await effectCounts(pool, schema);
    expect(counts.get('x1')).toBe(1);
    expect(replay).toBeDefined();
    const { rows } = await pool.query(`select replayed_at from "${schema}".dead_letters`);
    expect(rows).toHaveLength(1);
    expect(rows[0].replayed_at).not.toBeNull();
  });
});
