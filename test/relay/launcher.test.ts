import { execFileSync, spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { databaseUrl, freshSchema } from '../support/db.js';
import { kafkaConnection } from '../support/kafka.js';
import { useTestServices } from '../support/services.js';
import { waitFor } from '../support/wait.js';

const root = fileURLToPath(new URL('../..', import.meta.url));

describe('the outbox-relay command', () => {
  const { pool } = useTestServices();

  it('runs the relay with the memory settings it is measured with, unless told otherwise', { timeout: 120_000 }, async () => {
    if (!existsSync(`${root}dist/cli/main.js`)) execFileSync('npm', ['run', '--silent', 'build'], { cwd: root, stdio: 'inherit' });
    const schema = await freshSchema(pool);
    const start = (env: Record<string, string>) =>
      spawn(`${root}bin/outbox-relay`, ['relay', '--schema', schema, '--group', `launcher-${schema}`.replaceAll('_', '-'), '--shards', '1', '--http', 'off'], {
        env: { ...process.env, DATABASE_URL: databaseUrl(), KAFKA_BROKERS: String(kafkaConnection().brokers), LOG_LEVEL: 'info', ...env },
        stdio: ['ignore', 'pipe', 'inherit'],
      });
    const settingsOf = async (env: Record<string, string>) => {
      const child = start(env);
      let out = '';
      child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
      try {
        await waitFor(() => out.includes('relay started'), { timeoutMs: 60_000, message: 'the relay started' });
        // The launcher execs node: the process is the relay itself.
        const environ = readFileSync(`/proc/${child.pid}/environ`, 'utf8').split('\0');
        const argv = readFileSync(`/proc/${child.pid}/cmdline`, 'utf8').split('\0');
        return { arenas: environ.find((e) => e.startsWith('MALLOC_ARENA_MAX=')), semiSpace: argv.find((a) => a.startsWith('--max-semi-space-size')), main: argv.some((a) => a.endsWith('dist/cli/main.js')) };
      } finally {
        child.kill('SIGTERM');
        await new Promise((resolve) => child.once('exit', resolve));
      }
    };
    expect(await settingsOf({})).toEqual({ arenas: 'MALLOC_ARENA_MAX=2', semiSpace: '--max-semi-space-size=2', main: true });
    expect(await settingsOf({ MALLOC_ARENA_MAX: '8', OUTBOX_RELAY_NODE_OPTIONS: '' })).toEqual({ arenas: 'MALLOC_ARENA_MAX=8', semiSpace: undefined, main: true });
  });
});
