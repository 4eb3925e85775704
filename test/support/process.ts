import type { ChildProcess } from 'node:child_process';
import { spawnTracked } from './children.js';
import { appendFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { waitFor } from './wait.js';

const root = fileURLToPath(new URL('../..', import.meta.url));

export interface ChildEvent {
  event: string;
  [key: string]: unknown;
}

/** A child process running a fixture, with its JSON stdout lines collected as events. */
export class FixtureProcess {
  readonly events: ChildEvent[] = [];
  readonly child: ChildProcess;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  stderr = '';

  constructor(fixture: string, env: Record<string, string>) {
    this.child = spawnTracked(process.execPath, ['--import', 'tsx', `${root}/test/support/processes/${fixture}`], {
      cwd: root,
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    createInterface({ input: this.child.stdout! }).on('line', (line) => {
      if (process.env.FIXTURE_LOG) appendFileSync(process.env.FIXTURE_LOG, `${line}\n`);
      try {
        this.events.push(JSON.parse(line) as ChildEvent);
      } catch {
        // pino lines or other output: not an event
      }
    });
    this.child.stderr!.on('data', (chunk: Buffer) => {
      this.stderr = (this.stderr + chunk.toString()).slice(-20_000);
    });
    this.exited = new Promise((resolve) => this.child.on('exit', (code, signal) => resolve({ code, signal })));
  }

  count(event: string): number {
    return this.events.filter((e) => e.event === event).length;
  }

  async waitForEvent(event: string, count = 1, timeoutMs = 60_000): Promise<void> {
    await waitFor(() => this.count(event) >= count || this.child.exitCode !== null, { timeoutMs, message: `${event} x${count}` });
    if (this.count(event) < count) throw new Error(`child exited before ${event} x${count}: ${this.stderr}`);
  }

  async kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill(signal);
    await this.exited;
  }
}
