import { describe, expect, it } from 'vitest';
import { freshSchema } from '../helpers/db.js';
import { freshTopic } from '../helpers/kafka.js';
import { uniqueName, waitFor } from '../helpers/wait.js';
import { createEffectsTable, effectCounts, effectHandler, testConsumer } from './harness.js';
import { useTestServices } from '../helpers/services.js';

describe('consumer: commit-time failures, rewinds over dead letters, starting at the end', () => {
  const { pool, admin, producer, consumers } = useTestServices();

  it('a deferred constraint the handler violates is charged to the record (dead letter), not retried forever as a commit failure', async () => {
    const schema = await freshSchema(pool);
    await pool.query(`create table "${schema}".accounts (id text primary key)`);
    await pool.query(`create table "${schema}".entries (
      id bigserial primary key,
      account text not null references "${schema}".accounts (id) deferrable initially deferred,
      note text)`);
    await pool.query(`insert into "${schema}".accounts values ('known')`);
    const topic = await freshTopic(admin, 1);
    await producer.send(topic, [
      { key: 'a', value: 'known' },
      { key: 'b', value: 'unknown-account' },
      { key: 'c', value: 'known' },
    ]);
    const consumer = testConsumer({
      schema,
      topics: [topic],
      maxAttempts: 2,
      handler: async (record, tx) => {
        await tx.query(`insert into "${schema}".entries (account, note) values ($1, $2)`, [record.value!.toString(), record.key!.toString()]);
      },
    });
    consumers.push(consumer);
    await consumer.start();
    await waitFor(async () => (await pool.query(`select count(*)::int as n from "${schema}".entries`)).rows[0].n === 2, { timeoutMs: 30_000 });
    await waitFor(async () => (await pool.query(`select count(*)::int as n from "${schema}".dead_letters`)).rows[0].n === 1, { timeoutMs: 30_000 });
    await consumer.stop();
    const { rows } = await pool.query(`select error, attempts from "${schema}".dead_letters`);
    expect(rows[0].error).toMatch(/foreign key/);
    expect(rows[0].attempts).toBe(2);
    const notes = (await pool.query(`select note from "${schema}".entries order by id`)).rows.map((r) => r.note);
    expect(notes).toEqual(['a', 'c']);
  });

  it("a handler's own connection error (another service down) is charged to the record and dead-lettered, not mistaken for the database", async () => {
    const schema = await freshSchema(pool);
    await createEffectsTable(pool, schema);
    const topic = await freshTopic(admin, 1);
    await producer.send(topic, ['ok-1', 'calls-service', 'ok-2'].map((k) => ({ key: k, value: k })));
    const apply = effectHandler(schema);
    const consumer = testConsumer({
      schema,
      topics: [topic],
      maxAttempts: 2,
      handler: async (record, tx) => {
        if (record.value!.toString() === 'calls-service') {
          throw Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:1 (payment service)'), { code: 'ECONNREFUSED' });
        }
        await apply(record, tx);
      },
    });
    consumers.push(consumer);
    await consumer.start();
    await waitFor(async () => (await pool.query(`select count(*)::int as n from "${schema}".dead_letters`)).rows[0].n === 1, { timeoutMs: 30_000 });
    await waitFor(async () => (await effectCounts(pool, schema)).size === 2, { timeoutMs: 30_000 });
    await consumer.stop();
    const { rows } = await pool.query(`select error, attempts from "${schema}".dead_letters`);
    expect(rows[0]).toMatchObject({ attempts: 2 });
    expect(rows[0].error).toContain('payment service');
  });

  it('a dead-lettered record applied again after a rewind settles its dead letter, so a replay does not apply it twice', async () => {
    const schema = await freshSchema(pool);
    await createEffectsTable(pool, schema);
    const topic = await freshTopic(admin, 1);
    await producer.send(topic, ['x0', 'x1', 'x2'].map((k) => ({ key: k, value: k })));
    let broken = true;
    const apply = effectHandler(schema);
    const groupId = uniqueName('g');
    const consumer = testConsumer({
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
    consumers.push(consumer);
    await consumer.start();
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

  it('with fromBeginning false, the start is pinned at the first assignment: records arriving before the first commit are not skipped', async () => {
    const schema = await freshSchema(pool);
    await createEffectsTable(pool, schema);
    const topic = await freshTopic(admin, 1);
    await producer.send(topic, [{ key: 'old', value: 'old' }]);
    const groupId = uniqueName('g');
    const first = testConsumer({ schema, groupId, topics: [topic], fromBeginning: false, handler: effectHandler(schema) });
    consumers.push(first);
    let assigned = 0;
    first.on('assigned', () => assigned++);
    await first.start();
    await waitFor(() => assigned > 0);
    await first.stop(); // stopped before any record arrived
    const stored = await pool.query(`select next_offset::int as n from "${schema}".consumer_offsets where group_id = $1`, [groupId]);
    expect(stored.rows).toHaveLength(1);

    await producer.send(topic, [{ key: 'new', value: 'new' }]);
    const second = testConsumer({ schema, groupId, topics: [topic], fromBeginning: false, handler: effectHandler(schema) });
    consumers.push(second);
    await second.start();
    await waitFor(async () => (await effectCounts(pool, schema)).has('new'), { timeoutMs: 30_000, message: 'record produced between the runs applied' });
    await second.stop();
    expect([...(await effectCounts(pool, schema)).keys()]).toEqual(['new']);
  });
});
