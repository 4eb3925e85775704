import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, it } from 'vitest';

const root = fileURLToPath(new URL('../..', import.meta.url));
const run = promisify(execFile);

const CASES = [
  { flags: ['--orders', 'abc'], message: /--orders must be a whole number in 1\.\.1000000, got "abc"/ },
  { flags: ['--orders', '0'], message: /--orders must be a whole number/ },
  { flags: ['--rate', '0'], message: /--rate must be a whole number in 1\.\.100000, got "0"/ },
  { flags: ['--rate', '1e3'], message: /--rate must be a whole number/ },
  { flags: ['--hold=-1'], message: /--hold must be a whole number in 0\.\.86400/ },
  { flags: ['--hold', '-1'], message: /Option '--hold' argument is ambiguous/ },
  { flags: ['--order', '10'], message: /Unknown option '--order'/ },
];

describe('the demo refuses bad flags before touching a service', () => {
  // Each case starts node with tsx, on a machine maybe busy with more: seconds, not milliseconds.
  it.concurrent.for(CASES)('npm run demo -- $flags exits 2 with a message', { timeout: 60_000 }, async ({ flags, message }, { expect }) => {
    // No services in this layer: a refusal that connected first would fail differently.
    const env = { ...process.env, DATABASE_URL: 'postgres://nobody@127.0.0.1:1/none', KAFKA_BROKERS: '127.0.0.1:1' };
    const outcome = await run(process.execPath, ['--import', 'tsx', 'examples/demo.ts', ...flags], { cwd: root, env }).then(
      () => ({ code: 0, stderr: '' }),
      (err: { code: number; stderr: string }) => ({ code: err.code, stderr: err.stderr }),
    );
    expect(outcome.code).toBe(2);
    expect(outcome.stderr).toMatch(message);
  });
});
