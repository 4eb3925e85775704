import { describe, expect, it } from 'vitest';
import { cli } from '../support/cli.js';
import { freshSchema } from '../support/db.js';
import { missingTopic } from '../support/kafka.js';
import { startRelay, waitAllSent, withRelay } from '../support/relay.js';
import { useTestServices } from '../support/services.js';
import { waitFor } from '../support/wait.js';

describe('outbox-relay stuck and show: what on-call sees', () => {
  const { pool, admin, freshOutbox } = useTestServices();

  it('stuck lists unsent rows past the age, oldest first, with what holds each back; show prints one row in full', async () => {
    const schema = await freshSchema(pool);
    const { rows } = await pool.query(
      `insert into ${schema}.messages (topic, key, payload, state, attempts, last_error, created_at, next_attempt_at, sent_at, kafka_partition, kafka_offset)
       values ('orders', 'k1', 'dead one', 'dead', 10, 'unknown topic orders', now() - interval '1 hour', now(), null, null, null),
              ('orders', 'k1', 'behind it', 'pending', 0, null, now() - interval '50 minutes', now(), null, null, null),
              ('orders', 'k2', 'retrying', 'failed', 2, 'MSG_SIZE_TOO_LARGE', now() - interval '40 minutes', now() + interval '5 minutes', null, null, null),
              ('orders', 'k3', 'fresh', 'pending', 0, null, now(), now(), null, null, null),
              ('orders', 'k4', convert_to('{"sent":true}', 'UTF8'), 'sent', 1, null, now() - interval '2 hours', now(), now(), 3, 42),
              ('orders', null, '\\x00ff00'::bytea, 'pending', 0, null, now() - interval '30 minutes', now(), null, null, null)
       returning id::text`,
    );
    const [dead, behind, failed, , sent, binary] = rows.map((r) => r.id as string);

    const stuck = await cli('stuck', '--json', '--schema', schema);
    expect(stuck.code).toBe(0);
    const listed = JSON.parse(stuck.stdout).rows as Array<Record<string, unknown>>;
    expect(listed.map((r) => r.id)).toEqual([dead, behind, failed, binary]);
    expect(listed[0]).toMatchObject({ state: 'dead', attempts: 10, heldBack: expect.stringContaining('unknown topic orders') });
    expect(listed[1]).toMatchObject({ state: 'pending', blockedBy: dead, heldBack: `waits for row ${dead}, an earlier failed or dead row of its key` });
    expect(listed[2]).toMatchObject({ state: 'failed', heldBack: expect.stringMatching(/^failed, next attempt at .*MSG_SIZE_TOO_LARGE/) });
    expect(listed[1]!.ageSeconds).toBeGreaterThanOrEqual(2_999);

    const filtered = await cli('stuck', '--state', 'dead', '--topic', 'orders', '--key', 'k1', '--older-than', '10m', '--json', '--schema', schema);
    expect(JSON.parse(filtered.stdout).rows.map((r: { id: string }) => r.id)).toEqual([dead]);
    const text = await cli('stuck', '--older-than', '45m', '--schema', schema);
    expect(text.stdout).toContain('2 stuck row(s) older than 2700000 ms');

    const shown = await cli('show', sent!, '--json', '--schema', schema);
    expect(shown.code).toBe(0);
    expect(JSON.parse(shown.stdout)).toMatchObject({
      id: sent,
      state: 'sent',
      kafka: { partition: 3, offset: '42' },
      payload: { bytes: 13, preview: '{"sent":true}', encoding: 'utf8', truncated: false },
    });
    expect(JSON.parse((await cli('show', binary!, '--json', '--schema', schema)).stdout).payload).toEqual({ bytes: 3, preview: '00ff00', encoding: 'hex', truncated: false });
    expect((await cli('show', failed!, '--schema', schema)).stdout).toMatch(/lastError\s+MSG_SIZE_TOO_LARGE/);
  });

  it('show lists a row\'s last 10 failed attempts, oldest first, kept when an operator retries it and it is sent', { timeout: 90_000 }, async () => {
    const schema = await freshSchema(pool);
    const topic = missingTopic();
    const { rows } = await pool.query(`insert into ${schema}.messages (topic, key, payload) values ($1, 'k', 'x') returning id::text`, [topic]);
    const id = rows[0].id as string;
    const show = async () => JSON.parse((await cli('show', id, '--json', '--schema', schema)).stdout) as { state: string; attempts: number; errors: Array<{ at: string; attempt: number; error: string }> };
    await withRelay(startRelay(schema, { shards: 1, maxAttempts: 12, rowBackoff: { minMs: 10, maxMs: 20 } }), async () => {
      await waitFor(async () => (await show()).state === 'dead', { timeoutMs: 60_000, message: 'the row dead after 12 attempts' });
      const dead = await show();
      expect(dead.attempts).toBe(12);
      // The last 10 of its 12 attempts, oldest first, each with when and why.
      expect(dead.errors.map((e) => e.attempt)).toEqual([3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
      for (const e of dead.errors) expect(e.error).toMatch(new RegExp(`unknown topic ${topic}`));
      expect(dead.errors.map((e) => Date.parse(e.at))).toEqual(dead.errors.map((e) => Date.parse(e.at)).sort((a, b) => a - b));
      const text = (await cli('show', id, '--schema', schema)).stdout;
      expect(text).toContain('errors         the last 10 failed attempt(s), oldest first:');
      expect(text).toMatch(/attempt 12 {2}unknown topic/);

      await admin.createTopic({ topic, num_partitions: 1, replication_factor: 1 });
      expect((await cli('retry', id, '--reason', 'topic created', '--schema', schema)).code).toBe(0);
      await waitFor(async () => (await show()).state === 'sent', { timeoutMs: 30_000, message: 'the row sent after the retry' });
      // Sent: the history of how it got there stays.
      expect((await show()).errors.map((e) => e.attempt)).toEqual([3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
    });
    // A row that never failed has an empty history.
    const { rows: fresh } = await pool.query(`insert into ${schema}.messages (topic, key, payload, state) values ($1, 'k2', 'y', 'pending') returning id::text`, [topic]);
    expect(JSON.parse((await cli('show', fresh[0].id, '--json', '--schema', schema)).stdout).errors).toEqual([]);
  });

  it.each([
    [['stuck', '--older-than', '5 minutes']],
    [['stuck', '--older-than', '-5m']],
    [['stuck', '--state', 'sent']],
    [['stuck', '--limit', '0']],
    [['stuck', '--limit', '99999999']],
    [['stuck', '--topic', 'no-such-topic']],
    [['show', 'abc']],
    [['show', '0']],
    [['show', '99999999999999999999']],
    [['show', '424242']],
    [['show']],
  ])('%j is refused with exit 2 and a message', async (args) => {
    const schema = await freshSchema(pool);
    const result = await cli(...args, '--schema', schema);
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(/^outbox-relay (stuck|show): .+/m);
  });

  it('a filter is a bound parameter: SQL in it is a key no row has (exit 2, nothing changed), and a real key with quotes matches exactly', async () => {
    const schema = await freshSchema(pool);
    await pool.query(`insert into ${schema}.messages (topic, key, payload, created_at) values ('t', 'k', 'x', now() - interval '1 day'), ('t', 'O''Brien; --', 'y', now() - interval '1 day')`);
    const injected = await cli('stuck', '--key', "k' or '1'='1", '--json', '--schema', schema);
    expect(injected.code).toBe(2);
    expect(injected.stderr).toContain(`no unsent row has key "k' or '1'='1"`);
    const quoted = await cli('stuck', '--key', "O'Brien; --", '--json', '--schema', schema);
    expect(quoted.code).toBe(0);
    expect(JSON.parse(quoted.stdout).rows).toMatchObject([{ key: "O'Brien; --", state: 'pending' }]);
    expect((await pool.query(`select count(*)::int as n from ${schema}.messages`)).rows[0].n).toBe(2);
  });

  it('status shows unsent rows per topic and shard, shard owners, live relays, consumer lag and dead letters, with a verdict and its reason', async () => {
    const { schema, topic } = await freshOutbox(1);
    expect(JSON.parse((await cli('status', '--json', '--schema', schema)).stdout)).toMatchObject({ verdict: 'OK', reason: 'every row is moving' });

    await withRelay(startRelay(schema, { shards: 2, relayId: 'relay-a' }), async (relay) => {
      await pool.query(`insert into ${schema}.messages (topic, key, payload) select $1, 'k' || i, 'v' from generate_series(1, 3) i`, [topic]);
      await waitAllSent(pool, schema);
      await waitFor(() => relay.shards.length === 2);
      // A consumer group that stored offset 1 of the topic's three records, and left a dead letter.
      await pool.query(`insert into ${schema}.consumer_offsets (group_id, topic, partition, next_offset) values ('ledger', $1, 0, 1)`, [topic]);
      await pool.query(
        `insert into ${schema}.dead_letters (group_id, topic, partition, "offset", error, attempts) values ('ledger', $1, 0, 0, 'boom', 3)`,
        [topic],
      );
      // The log end counts the transaction markers too: lag is in offsets, as Kafka's own tools
      // count it, and 0 for a group past the last record, though a commit marker follows it.
      const end = (await admin.endOffsets(topic, [0], { committed: true })).get(0)!;
      expect(end).toBeGreaterThanOrEqual(4);
      await pool.query(`insert into ${schema}.consumer_offsets (group_id, topic, partition, next_offset) values ('audit', $1, 0, $2)`, [topic, end - 1]);
      const degraded = JSON.parse((await cli('status', '--json', '--schema', schema)).stdout);
      expect(degraded).toMatchObject({
        verdict: 'DEGRADED',
        reason: 'consumer group ledger: 1 dead letter(s) not replayed',
        unsent: { pending: 0, failed: 0, dead: 0 },
        relay: { group: expect.any(String), shards: 2, members: [{ relayId: 'relay-a', live: true }] },
        consumers: [
          { group: 'audit', deadLettersPending: 0, partitions: [{ topic, partition: 0, storedOffset: end - 1, endOffset: end, lag: 0, recordsWaiting: false }] },
          { group: 'ledger', deadLettersPending: 1, partitions: [{ topic, partition: 0, storedOffset: 1, endOffset: end, lag: end - 1, recordsWaiting: true }] },
        ],
      });
      expect(degraded.relay.owners.map((o: { owner: string }) => o.owner)).toEqual(['relay-a', 'relay-a']);

      await pool.query(`insert into ${schema}.messages (topic, key, payload, state, attempts, last_error) values ('gone', 'k9', 'x', 'dead', 10, 'unknown topic')`);
      const stuck = await cli('status', '--schema', schema);
      expect(stuck.code).toBe(0);
      expect(stuck.stdout).toMatch(/^STUCK: 1 dead row\(s\) hold back their keys/m);
      expect(stuck.stdout).toMatch(/topic gone\tdead\t1/);
    });
  });
});
