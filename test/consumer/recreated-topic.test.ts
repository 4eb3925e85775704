import { describe, expect, it } from 'vitest';
import type { KafkaAdmin } from '../../src/kafka/admin.js';
import { HEADER } from '../../src/outbox/event.js';
import { cli } from '../support/cli.js';
import { useTestServices, type TestServices } from '../support/services.js';
import { uniqueName, waitFor } from '../support/wait.js';
import { effectCounts, effectHandler, effectHandlerFailing, exactlyOnceReport, testConsumer, relayed } from '../support/consumer.js';
import type { ConsumerEvents } from '../../src/consumer/index.js';

const range = (prefix: string, n: number) => Array.from({ length: n }, (_, i) => `${prefix}${i}`);

/** Deletes the topic and creates it again under the same name (a new incarnation, a new topic id). */
async function recreate(admin: KafkaAdmin, topic: string): Promise<void> {
  const before = (await admin.topicIds([topic])).get(topic);
  await admin.deleteTopic(topic);
  await waitFor(
    async () => {
      await admin.createTopic({ topic, num_partitions: 1, replication_factor: 1 });
      const after = (await admin.topicIds([topic])).get(topic);
      return after !== undefined && after !== before;
    },
    { timeoutMs: 30_000, message: `topic ${topic} recreated` },
  );
}

/**
 * Recreates the topic, writes `n` records to its new log and waits until they are all
 * applied: within 60 s, for the member may have given the partition up meanwhile (see the
 * first test). Returns their values.
 */
async function recreateWith(services: TestServices, schema: string, topic: string, n: number): Promise<string[]> {
  await recreate(services.admin, topic);
  const fresh = range('new-', n);
  await services.producer.send(topic, fresh.map((v) => ({ key: v, value: v })));
  await waitFor(
    async () => {
      const counts = await effectCounts(services.pool, schema);
      return counts.has(fresh[0]!) && counts.has(fresh.at(-1)!);
    },
    { timeoutMs: 60_000, message: 'the whole new log applied' },
  );
  return fresh;
}

describe('consumer: a topic deleted and recreated', () => {
  const services = useTestServices();
  const { pool, admin, producer, consumers, freshEffects, startConsumer } = services;

  it("a recreated topic's records are all applied once, and the inbox still skips what was applied before", { timeout: 90_000 }, async () => {
    const { schema, topic } = await freshEffects(1);
    const consumer = testConsumer({ schema, topics: [topic], handler: effectHandler(schema) });
    consumers.push(consumer);
    const incidents: ConsumerEvents['offsetOutOfRange'][] = [];
    consumer.on('offsetOutOfRange', (e) => incidents.push(e));
    await consumer.start();
    const old = range('old-', 14);
    await producer.send(topic, relayed(old.slice(0, 7), 1));
    await producer.send(topic, relayed(old.slice(7), 8));
    await waitFor(async () => (await effectCounts(pool, schema)).size === old.length, { timeoutMs: 30_000 });

    await recreate(admin, topic);
    // The new log is shorter than the stored offset (14): two records already applied
    // (re-published with the same outbox ids) and three new ones.
    const fresh = range('new-', 3);
    await producer.send(topic, [...relayed(['old-3', 'old-9'], 4).map((r, i) => ({ ...r, headers: { ...r.headers, [HEADER.outboxId]: String([4, 10][i]) } })), ...relayed(fresh, 15)]);
    // Either the member reads on into the new log (caught by its fetch or its periodic topic
    // id check, within a second) or it noticed the deletion first and gave the partition up
    // (then it gets it back at its next metadata refresh, 10 s, plus a rebalance).
    await waitFor(async () => (await effectCounts(pool, schema)).has('new-2'), { timeoutMs: 60_000, message: 'the new log applied' });
    await consumer.stop();

    expect(exactlyOnceReport(await effectCounts(pool, schema), [...old, ...fresh])).toEqual({ duplicates: [], missing: [], unexpected: [] });
    expect(incidents.length).toBeGreaterThanOrEqual(1);
    expect(incidents[0]).toMatchObject({ topic, partition: 0, stored: 15, action: 'earliest', logStart: 0 });
    expect(['topic-recreated', 'beyond-log-end']).toContain(incidents[0]!.reason);
    const metric = await consumer.metrics.getSingleMetricAsString('consumer_offset_out_of_range_total');
    expect(metric).toMatch(new RegExp(`topic="${topic}".*} 1`));
    const stored = await pool.query(`select topic_id from "${schema}".consumer_offsets`);
    expect(stored.rows[0].topic_id).toBe((await admin.topicIds([topic])).get(topic));
  });

  it('a member that gave up a deleted topic gets it back within seconds of its re-creation, and applies the new log from its start', { timeout: 90_000 }, async () => {
    const { schema, topic } = await freshEffects(1);
    const consumer = testConsumer({ schema, topics: [topic], handler: effectHandler(schema) });
    consumers.push(consumer);
    let revoked = 0;
    let assigned = 0;
    consumer.on('revoked', (e) => (revoked += e.partitions.filter((p) => p.topic === topic).length));
    consumer.on('assigned', (e) => (assigned += e.partitions.filter((p) => p.topic === topic).length));
    await consumer.start();
    await producer.send(topic, relayed(range('old-', 3), 1));
    await waitFor(async () => (await effectCounts(pool, schema)).size === 3, { timeoutMs: 30_000 });
    // Gone long enough for the member to notice (its metadata refresh) and give the partition up.
    await admin.deleteTopic(topic);
    await waitFor(() => revoked > 0, { timeoutMs: 30_000, message: 'the deleted topic\'s partition revoked' });
    const assignedBefore = assigned;
    await waitFor(
      async () => {
        await admin.createTopic({ topic, num_partitions: 1, replication_factor: 1 }).catch(() => undefined);
        return (await admin.topicIds([topic])).has(topic);
      },
      { timeoutMs: 30_000, message: `topic ${topic} created again` },
    );
    const fresh = range('new-', 3);
    await producer.send(topic, relayed(fresh, 10));
    // Librdkafka's default metadata refresh (5 minutes) would leave it unassigned far longer.
    await waitFor(async () => (await effectCounts(pool, schema)).has('new-2'), { timeoutMs: 30_000, message: 'the new log applied' });
    expect(assigned).toBeGreaterThan(assignedBefore);
    await consumer.stop();
    expect(exactlyOnceReport(await effectCounts(pool, schema), [...range('old-', 3), ...fresh])).toEqual({ duplicates: [], missing: [], unexpected: [] });
  });

  it('a recreated topic that already grew past the stored offset is applied from its start, not from the stale offset', { timeout: 90_000 }, async () => {
    const { schema, topic } = await freshEffects(1);
    const consumer = testConsumer({ schema, topics: [topic], handler: effectHandler(schema), inbox: false });
    consumers.push(consumer);
    const incidents: ConsumerEvents['offsetOutOfRange'][] = [];
    consumer.on('offsetOutOfRange', (e) => incidents.push(e));
    await consumer.start();
    const old = range('old-', 5);
    await producer.send(topic, old.map((v) => ({ key: v, value: v })));
    await waitFor(async () => (await effectCounts(pool, schema)).size === old.length, { timeoutMs: 30_000 });

    // More records than the stored offset: a consumer trusting it would start at 6 and skip 0..5.
    const fresh = await recreateWith(services, schema, topic, 20);
    await consumer.stop();
    const counts = await effectCounts(pool, schema);
    // Not one record of the new log committed under the stale offset: none is applied twice.
    expect(exactlyOnceReport(counts, [...old, ...fresh])).toEqual({ duplicates: [], missing: [], unexpected: [] });
    expect(incidents.map((i) => i.reason)).toContain('topic-recreated');
  });

  it("with onOffsetOutOfRange 'block' the partition waits, visibly, until an operator sets its offset", { timeout: 90_000 }, async () => {
    const { schema, topic } = await freshEffects(1);
    const groupId = uniqueName('g');
    const first = await startConsumer({ schema, groupId, topics: [topic], handler: effectHandler(schema) });
    const old = range('old-', 6);
    await producer.send(topic, relayed(old, 1));
    await waitFor(async () => (await effectCounts(pool, schema)).size === old.length, { timeoutMs: 30_000 });
    await first.stop();

    // Recreated while no consumer ran: caught at assignment.
    await recreate(admin, topic);
    const fresh = range('new-', 3);
    // The new log also holds an event applied from the old one (published again): the
    // operator's `offsets set` must not make the consumer forget it was applied.
    await producer.send(topic, [...relayed(['old-1'], 2), ...relayed(fresh, 7)]);
    const cautious = testConsumer({ schema, groupId, topics: [topic], handler: effectHandler(schema), onOffsetOutOfRange: 'block' });
    consumers.push(cautious);
    const incidents: ConsumerEvents['offsetOutOfRange'][] = [];
    cautious.on('offsetOutOfRange', (e) => incidents.push(e));
    await cautious.start();
    await waitFor(() => cautious.assignment().some((p) => p.blocked), { timeoutMs: 30_000, message: 'partition blocked' });
    expect(incidents[0]).toMatchObject({ topic, reason: 'topic-recreated', action: 'block', stored: 6 });
    expect(cautious.assignment()).toEqual([{ topic, partition: 0, nextOffset: 6, blocked: true }]);
    expect((await effectCounts(pool, schema)).has('new-0')).toBe(false);
    const stored = await pool.query(`select next_offset::int as n from "${schema}".consumer_offsets where group_id = $1`, [groupId]);
    expect(stored.rows[0].n).toBe(6); // untouched until the operator decides

    const set = await cli('offsets', 'set', '--schema', schema, '--group', groupId, '--topic', topic, '--partition', '0', '--offset', '0', '--reason', 'topic recreated');
    expect(set.code).toBe(0);
    await waitFor(async () => (await effectCounts(pool, schema)).has('new-2'), { timeoutMs: 30_000, message: 'applied after the operator set the offset' });
    await cautious.stop();
    expect(exactlyOnceReport(await effectCounts(pool, schema), [...old, ...fresh])).toEqual({ duplicates: [], missing: [], unexpected: [] });
  });
});

describe('consumer: a recreated topic behind an offset without topic id', () => {
  const services = useTestServices();
  const { pool, producer, consumers, freshEffects, startConsumer } = services;

  it('an offset written by hand without topic id still never hides a recreated topic', { timeout: 90_000 }, async () => {
    const { schema, topic } = await freshEffects(1);
    const consumer = await startConsumer({ schema, topics: [topic], handler: effectHandler(schema), inbox: false });
    const old = range('old-', 5);
    await producer.send(topic, old.map((v) => ({ key: v, value: v })));
    await waitFor(async () => (await effectCounts(pool, schema)).size === old.length, { timeoutMs: 30_000 });
    // Someone repairs the row by hand and leaves the topic id out.
    await pool.query(`update "${schema}".consumer_offsets set topic_id = null`);
    await waitFor(async () => (await pool.query(`select topic_id from "${schema}".consumer_offsets`)).rows[0].topic_id !== null, {
      timeoutMs: 10_000,
      message: 'the running consumer records the id again',
    });
    const fresh = await recreateWith(services, schema, topic, 12);
    await consumer.stop();
    expect(exactlyOnceReport(await effectCounts(pool, schema), [...old, ...fresh])).toEqual({ duplicates: [], missing: [], unexpected: [] });
  });

  it('a new group starting at the end of a busy topic is not mistaken for a stale offset', { timeout: 60_000 }, async () => {
    const { schema, topic } = await freshEffects(1);
    await producer.send(topic, range('history-', 5).map((v) => ({ key: v, value: v })));
    let sending = true;
    const background = (async () => {
      for (let i = 0; sending; i++) await producer.send(topic, [{ key: `live-${i}`, value: `live-${i}` }]);
    })();
    const consumer = testConsumer({ schema, topics: [topic], handler: effectHandler(schema), fromBeginning: false });
    consumers.push(consumer);
    const incidents: unknown[] = [];
    consumer.on('offsetOutOfRange', (e) => incidents.push(e));
    try {
      await consumer.start();
      await waitFor(async () => (await effectCounts(pool, schema)).size >= 5, { timeoutMs: 30_000, message: 'live records applied' });
    } finally {
      sending = false;
      await background;
    }
    await consumer.stop();
    expect(incidents).toEqual([]);
    expect([...(await effectCounts(pool, schema)).keys()].filter((k) => k.startsWith('history-'))).toEqual([]);
  });
});

describe('consumer: dead letters across topic incarnations', () => {
  const { pool, admin, producer, freshEffects, startConsumer } = useTestServices();

  it("a recreated topic's failing record gets a dead letter of its own and leaves the old log's one pending", { timeout: 90_000 }, async () => {
    const { schema, topic } = await freshEffects(1);
    const consumer = await startConsumer({
      schema,
      topics: [topic],
      maxAttempts: 1,
      handler: effectHandlerFailing(schema, (value) => (value.startsWith('bad') ? new Error('bad record') : undefined)),
    });
    await producer.send(topic, [{ key: 'a', value: 'bad-old' }, { key: 'b', value: 'ok-old' }]);
    await waitFor(async () => (await effectCounts(pool, schema)).has('ok-old'), { timeoutMs: 30_000 });
    await recreate(admin, topic);
    // Same offsets in the new log: 0 fails again, 1 is applied.
    await producer.send(topic, [{ key: 'a', value: 'bad-new' }, { key: 'b', value: 'ok-new' }]);
    await waitFor(async () => (await effectCounts(pool, schema)).has('ok-new'), { timeoutMs: 60_000, message: 'the new log applied' });
    await consumer.stop();
    const { rows } = await pool.query(`select convert_from(value, 'UTF8') as value, "offset"::int as "offset", replayed_at from "${schema}".dead_letters order by id`);
    expect(rows.map((r) => [r.value, r.offset, r.replayed_at])).toEqual([
      ['bad-old', 0, null],
      ['bad-new', 0, null],
    ]);
  });
});
