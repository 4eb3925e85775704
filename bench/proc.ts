// Small helpers for the benchmarks that watch a process of their own.
import { readdirSync, readFileSync } from 'node:fs';

/** Resident set size of process `pid` in MiB, from /proc; 0 once it has exited. */
export function rssMb(pid: number): number {
  try {
    return Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0) / 1024;
  } catch {
    return 0;
  }
}

/** CPU time so far, in ms, of every process of this machine whose command is `comm` (e.g. `postgres`, `java`), from /proc. */
export function cpuMsOf(comm: string): number {
  let ticks = 0;
  for (const pid of readdirSync('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const close = stat.lastIndexOf(')');
      if (stat.slice(stat.indexOf('(') + 1, close) !== comm) continue;
      const fields = stat.slice(close + 2).split(' ');
      // utime and stime, fields 14 and 15 of stat(5), in clock ticks (100 a second on Linux).
      ticks += Number(fields[11]) + Number(fields[12]);
    } catch {
      // Exited meanwhile.
    }
  }
  return ticks * 10;
}

/**
 * CPU spent from `start()` to `stop()`, per row, in µs: this process (all its threads),
 * PostgreSQL's and the broker's processes when they run on this machine (0 otherwise).
 */
export function cpuPerRow(): { stop: (rows: number) => { processUs: number; postgresUs: number; brokerUs: number } } {
  const process0 = process.cpuUsage();
  const postgres0 = cpuMsOf('postgres');
  const broker0 = cpuMsOf('java');
  return {
    stop: (rows) => {
      const used = process.cpuUsage(process0);
      const per = (ms: number) => Math.round((ms * 1000) / Math.max(rows, 1) * 10) / 10;
      return { processUs: per((used.user + used.system) / 1000), postgresUs: per(cpuMsOf('postgres') - postgres0), brokerUs: per(cpuMsOf('java') - broker0) };
    },
  };
}
