import { spawnTracked } from '../support/children.js';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { createRelay } from '../../src/relay/relay.js';
import { databaseUrl, freshSchema } from '../support/db.js';
import { startRelay, testRelayOptions, waitAllSent, withRelay } from '../support/relay.js';
import { waitFor } from '../support/wait.js';
import { useTestServices } from '../support/services.js';

const root = fileURLToPath(new URL('../..', import.meta.url));

describe('relay lifecycle and operations', () => {
  const { connection, pool, freshOutbox } = useTestServices();

  it('the relay CLI publishes, and on SIGTERM drains, releases its shards and exits 0', async () => {
    const { schema, topic } = await freshOutbox(2);
    const group = `cli-${schema.replaceAll('_', '-')}`;
    const child = spawnTracked(process.execPath, ['--import', 'tsx', `${root}/src/cli/main.ts`, 'relay', '--schema', schema, '--group', group, '--shards', '2'], {
      env: { ...process.env, DATABASE_URL: databaseUrl(), KAFKA_BROKERS: String(connection.brokers), LOG_LEVEL: 'info' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout!.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (output += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    await pool.query(`insert into ${schema}.messages (topic, key, payload) select $1, 'k' || (i % 5), convert_to('v' || i, 'UTF8') from generate_series(1, 100) i`, [topic]);
    await waitAllSent(pool, schema);
    await waitFor(() => output.includes('shard acquired'));
    child.kill('SIGTERM');
    expect(await exited).toBe(0);
    expect(output).toContain('relay stopped');
    // No credentials in logs (the URL has none here, but the option name must not leak either).
    expect(output).not.toMatch(/postgres:\/\/[^"]*:[^"@]*@/);
    const { rows } = await pool.query(`select count(*)::int as n from ${schema}.relay_shards where relay_group = $1 and owner is not null`, [group]);
    expect(rows[0].n).toBe(0);
  });

  it('the relay CLI refuses bad flags with exit code 2 and a clear message', async () => {
    const child = spawnTracked(process.execPath, ['--import', 'tsx', `${root}/src/cli/main.ts`, 'relay', '--shards', 'many'], {
      env: { ...process.env, DATABASE_URL: databaseUrl(), KAFKA_BROKERS: String(connection.brokers) },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
    expect(code).toBe(2);
    expect(stderr).toContain('--shards must be an integer');
  });

  it('strict mode refuses to start when a target topic is missing or can lose data; default mode warns', async () => {
    const schema = await freshSchema(pool);
    await pool.query(`insert into ${schema}.messages (topic, payload) values ('topic-that-does-not-exist-here', 'x')`);
    const strict = createRelay(testRelayOptions(schema, { strict: true }));
    await expect(strict.start()).rejects.toMatchObject({ code: 'TOPIC_UNSAFE' });
    await withRelay(startRelay(schema), async (lenient) => {
      expect(lenient.topicReport?.missing).toEqual(['topic-that-does-not-exist-here']);
    });
  });

  it('refuses to start on a schema that is not migrated; the failed start closes what it opened, and start() again gives the same error', async () => {
    const relay = createRelay(testRelayOptions('never_migrated_schema'));
    const first = await relay.start().catch((err: unknown) => err);
    expect(first).toMatchObject({ code: 'MIGRATION_FAILED' });
    expect((relay as unknown as { pool?: { ended?: boolean } }).pool?.ended).toBe(true);
    expect(await relay.start().catch((err: unknown) => err)).toBe(first);
    await relay.stop();
  });

  it('a stopped relay cannot start again: STOPPED, create a new one', async () => {
    const relay = createRelay(testRelayOptions(await freshSchema(pool)));
    await relay.stop();
    await expect(relay.start()).rejects.toMatchObject({ code: 'STOPPED', message: expect.stringMatching(/create a new one/) });
  });

  it('retention deletes sent rows past the retention period in batches and keeps the rest', async () => {
    const { schema, topic } = await freshOutbox(1);
    await pool.query(`insert into ${schema}.messages (topic, key, payload) select $1, 'k', convert_to('v' || i, 'UTF8') from generate_series(1, 250) i`, [topic]);
    const relay = await startRelay(schema, { retention: false });
    await waitAllSent(pool, schema);
    await relay.stop();
    // Age 200 of the sent rows past the retention period; leave 50 recent; add an unsent one.
    await pool.query(`update ${schema}.messages set sent_at = now() - interval '8 days' where id in (select id from ${schema}.messages order by id limit 200)`);
    await pool.query(`insert into ${schema}.messages (topic, payload) values ('no-relay-running', 'pending')`);
    await withRelay(startRelay(schema, { retention: { keepMs: 7 * 86_400_000, intervalMs: 100, batchSize: 30 } }), async () => {
      await waitFor(async () => (await pool.query(`select count(*)::int as n from ${schema}.messages`)).rows[0].n === 51, {
        message: 'old sent rows purged',
      });
      const { rows } = await pool.query(`select count(*) filter (where state = 'sent')::int as sent, count(*)::int as total from ${schema}.messages`);
      expect(rows[0]).toEqual({ sent: 50, total: 51 });
    });
  });
});
