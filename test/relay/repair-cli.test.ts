import type pg from 'pg';
import { describe, expect, it } from 'vitest';
import { cli } from '../support/cli.js';
import { freshSchema } from '../support/db.js';
import { missingTopic, headerValue, readTopic } from '../support/kafka.js';
import { expectExactlyOnce, startRelay, withRelay } from '../support/relay.js';
import { useTestServices } from '../support/services.js';
import { waitFor } from '../support/wait.js';

async function insert(pool: pg.Pool, schema: string, topic: string, key: string, payload: string): Promise<string> {
  const { rows } = await pool.query(`insert into ${schema}.messages (topic, key, payload) values ($1, $2, $3) returning id::text`, [topic, key, Buffer.from(payload)]);
  return rows[0].id as string;
}

async function stateOf(pool: pg.Pool, schema: string, id: string): Promise<string> {
  return (await pool.query(`select state from ${schema}.messages where id = $1`, [id])).rows[0].state as string;
}

describe('outbox-relay retry and skip: audited repairs that keep per-key order', () => {
  const { connection, pool, freshOutbox } = useTestServices({ poolSize: 6 });

  it('retry puts a dead row back ahead of the rows held behind it; skip parks one for good and lets its key move on; both are audited', async () => {
    const { schema, topic } = await freshOutbox(1);
    const missing = missingTopic();
    await withRelay(startRelay(schema, { maxAttempts: 1 }), async () => {
      const deadA = await insert(pool, schema, missing, 'a', 'a0');
      const deadB = await insert(pool, schema, missing, 'b', 'b0');
      await waitFor(async () => (await stateOf(pool, schema, deadA)) === 'dead' && (await stateOf(pool, schema, deadB)) === 'dead');
      const laterA = [await insert(pool, schema, topic, 'a', 'a1'), await insert(pool, schema, topic, 'a', 'a2')];
      const laterB = [await insert(pool, schema, topic, 'b', 'b1')];

      // Dry run: lists, changes nothing, writes no audit.
      const dry = await cli('retry', deadA, '--dry-run', '--json', '--schema', schema);
      expect(dry.code).toBe(0);
      expect(JSON.parse(dry.stdout)).toMatchObject({ dryRun: true, changed: 1, audit: null });
      expect(await stateOf(pool, schema, deadA)).toBe('dead');

      // The operator fixes the row's topic, then retries it.
      await pool.query(`update ${schema}.messages set topic = $2 where id = $1`, [deadA, topic]);
      const retried = await cli('retry', deadA, '--reason', 'topic created', '--actor', 'oncall-1', '--schema', schema);
      expect(retried.code).toBe(0);
      expect(retried.stdout).toMatch(new RegExp(`${deadA}\\t${topic}\\ta\\tdead -> pending \\(attempts 1 -> 0\\)`));
      const skipped = await cli('skip', deadB, '--reason', "bad event; it's been re-sent by hand", '--schema', schema);
      expect(skipped.code).toBe(0);

      await waitFor(async () => (await pool.query(`select count(*)::int as n from ${schema}.messages where state = 'sent'`)).rows[0].n === 4);
      expect(await stateOf(pool, schema, deadB)).toBe('skipped');
      const read = await readTopic(connection, topic, 1, { expected: 4 });
      expectExactlyOnce(read, [deadA, ...laterA, ...laterB]);
      expect(read.filter((m) => m.key?.toString() === 'a').map((m) => headerValue(m, 'outbox-id'))).toEqual([deadA, ...laterA]);

      const { rows: audit } = await pool.query(`select actor, command, row_ids::text[] as ids, reason, counts from ${schema}.operator_actions order by id`);
      expect(audit).toHaveLength(2);
      expect(audit[0]).toMatchObject({ actor: 'oncall-1', command: 'retry', ids: [deadA], reason: 'topic created', counts: { changed: 1, from: { dead: 1 } } });
      expect(audit[1]).toMatchObject({ command: 'skip', ids: [deadB], reason: "bad event; it's been re-sent by hand" });
    });
  });

  it('bad input is refused with exit 2 and changes nothing; filters are bound, never interpolated', async () => {
    const schema = await freshSchema(pool);
    const { rows } = await pool.query(
      `insert into ${schema}.messages (topic, key, payload, state, attempts, last_error, sent_at)
       values ('t', 'k', 'x', 'dead', 3, 'e', null), ('t', 'k2', 'y', 'sent', 1, null, now()) returning id::text`,
    );
    const [dead, sent] = rows.map((r) => r.id as string);
    const before = (await pool.query(`select id, state, attempts from ${schema}.messages order by id`)).rows;
    for (const args of [
      ['retry', dead!], // no --reason
      ['retry', 'abc', '--reason', 'r'],
      ['retry', '-5', '--reason', 'r'],
      ['retry', '99999999999999999999', '--reason', 'r'],
      ['retry', '424242', '--reason', 'r'], // unknown id
      ['retry', dead!, sent!, '--reason', 'r'], // a sent row among them: all refused
      ['skip', sent!, '--reason', 'r'],
      ['retry', '--dead', '--since', 'yesterday', '--reason', 'r'],
      ['retry', '--dead', '--limit', '0', '--reason', 'r'],
      ['retry', dead!, '--topic', 't', '--reason', 'r'],
      ['retry', '--dead', '--topic', 'no-such-topic', '--reason', 'r'], // unknown topic
    ]) {
      const result = await cli(...args, '--schema', schema);
      expect({ args, code: result.code }).toEqual({ args, code: 2 });
      expect(result.stderr).toMatch(/outbox-relay (retry|skip): /);
    }
    // A filter is a bound parameter: SQL in it is a key no dead row has.
    const injected = await cli('retry', '--dead', '--key', "k' or 1=1 --", '--reason', 'r', '--json', '--schema', schema);
    expect(injected.code).toBe(2);
    expect(injected.stderr).toContain(`no dead row of key "k' or 1=1 --"; nothing changed`);
    expect((await pool.query(`select id, state, attempts from ${schema}.messages order by id`)).rows).toEqual(before);
    expect((await pool.query(`select count(*)::int as n from ${schema}.operator_actions`)).rows[0].n).toBe(0);

    const byFilter = await cli('retry', '--dead', '--topic', 't', '--key', 'k', '--reason', 'replay after fix', '--json', '--schema', schema);
    expect(byFilter.code).toBe(0);
    expect(JSON.parse(byFilter.stdout)).toMatchObject({ changed: 1, rows: [{ id: dead, state: 'dead', to: 'pending' }] });
    const { rows: audit } = await pool.query(`select filter from ${schema}.operator_actions`);
    expect(audit[0].filter).toMatchObject({ state: 'dead', topic: 't', key: 'k' });
  });
});
