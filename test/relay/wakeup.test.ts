import pg from 'pg';
import { describe, expect, it } from 'vitest';
import { notifyChannel } from '../../src/db/identifiers.js';
import { enqueue } from '../../src/outbox/enqueue.js';
import { databaseUrl, inTransaction } from '../support/db.js';
import { startRelay } from '../support/relay.js';
import { useTestServices } from '../support/services.js';
import { waitFor } from '../support/wait.js';

describe('relay wake-ups', () => {
  const { pool, freshOutbox } = useTestServices();

  const idle = async (schema: string): Promise<boolean[]> => (await pool.query<{ idle: boolean }>(`select idle from "${schema}".relay_members`)).rows.map((r) => r.idle);
  const sent = async (schema: string, id: string): Promise<boolean> =>
    (await pool.query(`select 1 from "${schema}".messages where id = $1::bigint and state = 'sent'`, [id])).rowCount === 1;

  it('writers do not notify a busy relay, and a row whose writer read the flag just before the relay turned idle is published without waiting for the poll interval', { timeout: 240_000 }, async () => {
    const { schema, topic } = await freshOutbox(3);
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
      // The drained worker finds nothing and polls shortly while the claimed rate falls;
      // then the flag is set and it waits: the late row was not visible to its claims, and
      // nothing will notify when it is.
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

  it('writers do not notify a relay fed faster than a short poll, though its workers find nothing between batches; once the feed stops they notify again', { timeout: 240_000 }, async () => {
    const { schema, topic } = await freshOutbox(3);
    const listener = new pg.Client({ connectionString: databaseUrl() });
    await listener.connect();
    let notifications = 0;
    listener.on('notification', () => notifications++);
    await listener.query(`listen "${notifyChannel(schema)}"`);
    // Only a wake-up or a short poll publishes fast: the workers' own poll would take a minute.
    const relay = await startRelay(schema, { shards: 2, pollIntervalMs: 60_000 });
    let idleEvents = 0;
    relay.events.on('idle', () => idleEvents++);
    // 25 rows a transaction, one transaction every 5 ms when the machine keeps up (5,000 rows
    // a second; a transaction late on its schedule is not waited for): well above the quiet
    // rate even on a loaded machine, and a load the relay keeps up with, so its workers find
    // nothing now and then.
    let feeding = true;
    let transactions = 0;
    const ids: string[] = [];
    const feeder = (async () => {
      const start = Date.now();
      for (let t = 0; feeding; t++) {
        ids.push(...(await inTransaction(pool, (client) => enqueue(client, Array.from({ length: 25 }, (_, i) => ({ topic, key: `k${(t * 25 + i) % 20}`, payload: { t, i } })), { schema }))));
        transactions++;
        const ahead = start + (t + 1) * 5 - Date.now();
        if (ahead > 0) await new Promise((resolve) => setTimeout(resolve, ahead));
      }
    })();
    try {
      await waitFor(async () => (await idle(schema)).every((v) => v === false), { timeoutMs: 30_000, message: 'the relay fed fast clears its idle flag' });
      // Transactions that read the flag before it was cleared may still notify.
      const cleared = transactions;
      await waitFor(() => transactions >= cleared + 2, { timeoutMs: 10_000, message: 'the feed goes on' });
      notifications = 0;
      idleEvents = 0;
      const before = transactions;
      await waitFor(() => transactions >= before + 100 && idleEvents > 0, { timeoutMs: 60_000, message: 'a hundred more transactions, and workers that found nothing' });
      expect(notifications, 'writers notified a quiet relay').toBe(0);
      expect(await idle(schema)).toEqual([false]);
      feeding = false;
      await feeder;
      const unsent = async () => Number((await pool.query<{ n: string }>(`select count(*) as n from "${schema}".messages where state <> 'sent'`)).rows[0]!.n);
      await waitFor(async () => (await unsent()) === 0, { timeoutMs: 30_000, message: 'every row published by the short poll alone' });
      expect(ids.length).toBe(transactions * 25);

      // Fed no more: writers are asked to notify again, and their rows go at once.
      await waitFor(async () => (await idle(schema)).every((v) => v === true), { timeoutMs: 30_000, message: 'the relay no longer fed sets its idle flag' });
      notifications = 0;
      const [idleRow] = await inTransaction(pool, (client) => enqueue(client, { topic, key: 'idle', payload: {} }, { schema }));
      await waitFor(() => sent(schema, idleRow!), { timeoutMs: 10_000, message: 'the row written while idle published' });
      expect(notifications).toBeGreaterThan(0);
    } finally {
      feeding = false;
      await feeder.catch(() => undefined);
      await relay.stop();
      await listener.end();
    }
  });
});
