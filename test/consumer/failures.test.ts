import { AbortError } from 'p-retry';
import { describe, expect, it } from 'vitest';
import type { RecordHandler } from '../../src/consumer/index.js';
import { freshSchema } from '../support/db.js';
import { freshTopic } from '../support/kafka.js';
import { uniqueName, waitFor } from '../support/wait.js';
import { effectCounts, effectHandler, effectHandlerFailing, exactlyOnceReport, testConsumer } from '../support/consumer.js';
import { useTestServices } from '../support/services.js';

describe('consumer: handler failures', () => {
  const { pool, admin, producer, consumers, freshEffects, startConsumer } = useTestServices();

  /** Applies effects, but throws for the keys in `failing` (as long as they are in the set). */
  function failingHandler(schema: string, failing: Map<string, number>, attempts: Map<string, number>): RecordHandler {
    const apply = effectHandler(schema);
    return async (record, tx) => {
      const k = record.value!.toString();
      attempts.set(k, (attempts.get(k) ?? 0) + 1);
      await apply(record, tx); // written, then rolled back when the handler throws
      const left = failing.get(k);
      if (left !== undefined && left > 0) {
        failing.set(k, left - 1);
        throw new Error(`ledger rejected ${k}`);
      }
    };
  }

  async function deadLetters(schema: string) {
    const { rows } = await pool.query<{ id: string; offset: string; error: string; attempts: number; replayed_at: Date | null; value: Buffer }>(
      `select id, "offset", error, attempts, replayed_at, value from "${schema}".dead_letters order by id`,
    );
    return rows;
  }

  it('a handler that fails transiently succeeds on retry, and only its effect of the successful attempt remains', async () => {
    const { schema, topic } = await freshEffects(1);
    const keys = Array.from({ length: 10 }, (_, i) => `r${i}`);
    await producer.send(topic, keys.map((k) => ({ key: k, value: k })));
    const attempts = new Map<string, number>();
    const consumer = await startConsumer({ schema, topics: [topic], maxAttempts: 4, handler: failingHandler(schema, new Map([['r5', 2]]), attempts) });
    await waitFor(async () => (await effectCounts(pool, schema)).size === keys.length, { timeoutMs: 30_000 });
    await consumer.stop();

    expect(exactlyOnceReport(await effectCounts(pool, schema), keys)).toEqual({ duplicates: [], missing: [], unexpected: [] });
    // The batch attempt fails, the record's own first attempt fails, its retry succeeds.
    expect(attempts.get('r5')).toBe(3);
    expect(await deadLetters(schema)).toEqual([]);
  });

  it('a record that always fails is dead-lettered with its error, the partition moves on, and a replay applies it once', async () => {
    const { schema, topic } = await freshEffects(1);
    const keys = Array.from({ length: 10 }, (_, i) => `r${i}`);
    const delivered = await producer.send(topic, keys.map((k) => ({ key: k, value: k })));
    const failing = new Map([['r4', Number.POSITIVE_INFINITY]]);
    const groupId = uniqueName('g');
    const consumer = await startConsumer({ schema, groupId, topics: [topic], maxAttempts: 3, handler: failingHandler(schema, failing, new Map()) });
    await waitFor(async () => (await deadLetters(schema)).length === 1 && (await effectCounts(pool, schema)).size === 9, { timeoutMs: 30_000 });

    const [dead] = await deadLetters(schema);
    expect(dead!.error).toContain('ledger rejected r4');
    expect(dead!.attempts).toBe(3);
    expect(Number(dead!.offset)).toBe(delivered[4]!.offset);
    expect(dead!.value.toString()).toBe('r4');
    const counts = await effectCounts(pool, schema);
    expect(counts.has('r4')).toBe(false);
    // The offset moved past the dead letter in the same transaction.
    await waitFor(async () => {
      const { rows } = await pool.query(`select next_offset from "${schema}".consumer_offsets where group_id = $1`, [groupId]);
      return Number(rows[0]?.next_offset) === delivered.at(-1)!.offset + 1;
    });

    // The bug is fixed: replay through the same handler.
    failing.clear();
    const results = await consumer.replayDeadLetters();
    expect(results).toEqual([{ id: dead!.id, status: 'replayed' }]);
    expect(await consumer.replayDeadLetters()).toEqual([]);
    await consumer.stop();
    expect(exactlyOnceReport(await effectCounts(pool, schema), keys)).toEqual({ duplicates: [], missing: [], unexpected: [] });
    expect((await deadLetters(schema))[0]!.replayed_at).not.toBeNull();
  });

  it("a handler's AbortError skips the remaining attempts: dead-lettered after one", async () => {
    const { schema, topic } = await freshEffects(1);
    await producer.send(topic, ['ok', 'invalid', 'ok2'].map((k) => ({ key: k, value: k })));
    const consumer = await startConsumer({
      schema,
      topics: [topic],
      maxAttempts: 5,
      handler: effectHandlerFailing(schema, (value) => (value === 'invalid' ? new AbortError('schema version not supported') : undefined)),
    });
    await waitFor(async () => (await deadLetters(schema)).length === 1 && (await effectCounts(pool, schema)).size === 2, { timeoutMs: 30_000 });
    await consumer.stop();
    const [dead] = await deadLetters(schema);
    expect(dead!.attempts).toBe(1);
    expect(dead!.error).toContain('schema version not supported');
  });

  it('the block policy stops only the failing partition; unblock retries it', async () => {
    const { schema, topic } = await freshEffects(2);
    const p0 = Array.from({ length: 6 }, (_, i) => `p0-${i}`);
    const p1 = Array.from({ length: 6 }, (_, i) => `p1-${i}`);
    const delivered = await producer.send(topic, [...p0.map((k) => ({ key: k, value: k, partition: 0 })), ...p1.map((k) => ({ key: k, value: k, partition: 1 }))]);
    const failing = new Map([['p0-2', Number.POSITIVE_INFINITY]]);
    const groupId = uniqueName('g');
    const consumer = testConsumer({ schema, groupId, topics: [topic], maxAttempts: 2, failurePolicy: 'block', handler: failingHandler(schema, failing, new Map()) });
    consumers.push(consumer);
    const blocked: { partition: number; offset: number }[] = [];
    consumer.on('blocked', (e) => blocked.push({ partition: e.partition, offset: e.offset }));
    await consumer.start();
    await waitFor(() => blocked.length === 1, { timeoutMs: 30_000 });
    await waitFor(async () => {
      const applied = await effectCounts(pool, schema);
      return p1.every((k) => applied.has(k));
    }, { timeoutMs: 30_000 });

    // Partition 1 went all the way; partition 0 stopped at the failing record.
    const counts = await effectCounts(pool, schema);
    expect(p0.filter((k) => counts.has(k))).toEqual(['p0-0', 'p0-1']);
    expect(blocked).toEqual([{ partition: 0, offset: delivered[2]!.offset }]);
    expect(consumer.assignment().find((a) => a.partition === 0)?.blocked).toBe(true);
    const { rows } = await pool.query(`select next_offset from "${schema}".consumer_offsets where group_id = $1 and partition = 0`, [groupId]);
    expect(Number(rows[0]!.next_offset)).toBe(delivered[2]!.offset);
    expect(await deadLetters(schema)).toEqual([]);

    failing.clear();
    consumer.unblock(topic, 0);
    await waitFor(async () => (await effectCounts(pool, schema)).size === 12, { timeoutMs: 30_000 });
    await consumer.stop();
    expect(exactlyOnceReport(await effectCounts(pool, schema), [...p0, ...p1])).toEqual({ duplicates: [], missing: [], unexpected: [] });
  });

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
    const consumer = await startConsumer({
      schema,
      topics: [topic],
      maxAttempts: 2,
      handler: async (record, tx) => {
        await tx.query(`insert into "${schema}".entries (account, note) values ($1, $2)`, [record.value!.toString(), record.key!.toString()]);
      },
    });
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
    const { schema, topic } = await freshEffects(1);
    await producer.send(topic, ['ok-1', 'calls-service', 'ok-2'].map((k) => ({ key: k, value: k })));
    // The handler calls another service first, which refuses the connection.
    const serviceDown = () => Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:1 (payment service)'), { code: 'ECONNREFUSED' });
    const consumer = await startConsumer({
      schema,
      topics: [topic],
      maxAttempts: 2,
      handler: effectHandlerFailing(schema, (value) => (value === 'calls-service' ? serviceDown() : undefined)),
    });
    await waitFor(async () => (await pool.query(`select count(*)::int as n from "${schema}".dead_letters`)).rows[0].n === 1, { timeoutMs: 30_000 });
    await waitFor(async () => (await effectCounts(pool, schema)).size === 2, { timeoutMs: 30_000 });
    await consumer.stop();
    const { rows } = await pool.query(`select error, attempts from "${schema}".dead_letters`);
    expect(rows[0]).toMatchObject({ attempts: 2 });
    expect(rows[0].error).toContain('payment service');
  });
});
