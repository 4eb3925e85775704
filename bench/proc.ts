// Small helpers for the benchmarks that watch a process of their own.
import { readFileSync } from 'node:fs';

/** Resident set size of process `pid` in MiB, from /proc; 0 once it has exited. */
export function rssMb(pid: number): number {
  try {
    return Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0) / 1024;
  } catch {
    return 0;
  }
}
