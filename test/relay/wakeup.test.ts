import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { notifyChannel } from '../../src/db/identifiers.js';
import { enqueue } from '../../src/outbox/enqueue.js';
import { databaseUrl, freshSchema, inTransaction } from '../helpers/db.js';
import { freshTopic } from '../helpers/kafka.js';
import { startRelay } from '../helpers/relay.js';
import { useTestServices } from '../helpers/services.js';
import { waitFor } from '../helpers/wait.js';

describe('relay wake-ups', () => {
  const { pool, admin } = useTestServices();

  const idle = async (schema: string): Promise<boolean[]> => (await pool.query<{ idle: boolean }>(`select idle from "${schema}".relay_members`)).rows.map((r) => r.idle);
  const sent = async (schema: string, id: string): Promise<boolean> =>
    (await pool.query(`select 1 from "${schema}".messages where id = $1::bigint and state = 'sent'`, [id])).rowCount === 1;

  it('writers do not notify a busy relay, and a row whose writer read the flag just before the relay turned idle is published without waiting for the poll interval', { timeout: 240_000 }, async () => {
    const schema = await freshSchema(pool);
    const topic = await freshTopic(admin, 3);
    // A backlog that keeps the relay busy well past the quiet threshold (1 s).
    await inTransaction(pool, (client) => enqueue(client, Array.from({ length: 40_000 }, (_, i) => ({ topic, key: `k${i % 50}`, payload: { i } })), { schema }));
    const listener = new pg.Client({ connectionString: databaseUrl() });
    await listener.connect();
    let notifications = 0;
    listener.on('notification', () => notifications++);
    await listener.query(`listen "${notifyChannel(schema)}"`);
    // Only wake-ups can publish fast: the workers' own poll would take a minute.
    // One shard: no other worker's drain can pick the late row up by chance.
    const relay = await startRelay(schema, { shards: 1, batchSize: 100, pollIntervalMs: 60_000 });
    let idleEvents = 0;
    relay.events.on('idle', () => idleEvents++);
    const held = await pool.connect();
    try {
      await waitFor(async () => (await idle(schema)).every((v) => v === false) && (await idle(schema)).length === 1, { timeoutMs: 30_000, message: 'the busy relay clears its idle flag' });

      // A writer whose trigger reads the flag while it is clear, and commits only after the
      // relay has drained the backlog and set the flag again.
      await held.query('begin');
      const [lateRow] = await enqueue(held, { topic, key: 'late', payload: {} }, { schema });
      // Committed while the relay is busy: no notification.
      notifications = 0;
      const [busyRow] = await inTransaction(pool, (client) => enqueue(client, { topic, key: 'busy', payload: {} }, { schema }));
      expect(await idle(schema), 'still busy after both inserts (a larger backlog is needed otherwise)').toEqual([false]);
      idleEvents = 0;
      // Behind the whole backlog (one shard, id order): slow on a loaded machine.
      await waitFor(() => sent(schema, busyRow!), { timeoutMs: 60_000, message: 'the row written while busy published' });
      expect(notifications).toBe(0);
      // The drained worker finds nothing (first event), sets the flag, claims again, finds
      // nothing again (second event) and waits: the late row was not visible to that claim,
      // and nothing will notify when it is.
      await waitFor(async () => idleEvents >= 2 && (await idle(schema)).every((v) => v === true), { timeoutMs: 60_000, message: 'the drained relay sets its idle flag and waits' });
      await held.query('commit');
      await waitFor(() => sent(schema, lateRow!), { timeoutMs: 10_000, message: 'the row of the writer that did not notify published' });

      // Idle again: writers notify, and their rows go at once.
      const [idleRow] = await inTransaction(pool, (client) => enqueue(client, { topic, key: 'idle', payload: {} }, { schema }));
      await waitFor(() => sent(schema, idleRow!), { timeoutMs: 10_000, message: 'the row written while idle published' });
      await waitFor(() => notifications > 0, { timeoutMs: 10_000, message: 'a notification while idle' });
    } finally {
      held.release();
      await relay.stop();
      await listener.end();
    }
  });
});
