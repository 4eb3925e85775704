import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';

const children = new Set<ChildProcess>();

/**
 * `spawn`, remembered: every child still running when its test file ends is killed (see
 * test/setup/children.ts), so a test that fails half-way never leaves a relay or consumer
 * running in the background.
 */
export function spawnTracked(command: string, args: readonly string[], options: SpawnOptions): ChildProcess {
  const child = spawn(command, args, options);
  children.add(child);
  child.on('exit', () => children.delete(child));
  return child;
}

export function killTrackedChildren(): void {
  for (const child of children) {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGCONT'); // a paused child cannot act on SIGKILL's consequences otherwise
      child.kill('SIGKILL');
    }
  }
  children.clear();
}
