import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { DEFAULT_FAULT_KINDS } from '../../chaos/fault-kinds.js';
import type { ChaosReport as Report } from '../../chaos/report.js';
import { spawnTracked } from '../support/children.js';

const runner = fileURLToPath(new URL('../../chaos/run.ts', import.meta.url));


describe('fault-injection soak (npm run chaos, short)', () => {
  it(
    'under every fault kind, on a three-broker cluster and a PostgreSQL restarted at will, every committed row reaches Kafka once and in key order, and its effect is applied once',
    { timeout: 900_000 },
    async () => {
      const dir = mkdtempSync(join(tmpdir(), 'outbox-chaos-report-'));
      const reportFile = join(dir, 'report.json');
      try {
        // Its own services on ports of its own (the shared broker and database are untouched).
        const child = spawnTracked(process.execPath, ['--import', 'tsx', runner, '--events', '20000', '--rate', '400', '--fault-every', '1s', '--seed', '7', '--report', reportFile], {
          env: { ...process.env, CHAOS_KAFKA_PORT: '29592', CHAOS_PG_PORT: '25632' },
          stdio: ['ignore', 'pipe', 'pipe'],
        });
        let output = '';
        child.stdout!.on('data', (d: Buffer) => (output += d.toString()));
        child.stderr!.on('data', (d: Buffer) => (output += d.toString()));
        const code = await new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c)));
        expect(code, output.slice(-4_000)).toBe(0);
        const report = JSON.parse(readFileSync(reportFile, 'utf8')) as Report;
        expect(report.events).toBeGreaterThanOrEqual(20_000);
        // Every kind the short run takes (the opt-in postgresHalfOpen aside), each at least once.
        expect(Object.keys(report.faults).sort()).toEqual([...DEFAULT_FAULT_KINDS].sort());
        for (const [kind, count] of Object.entries(report.faults)) expect(count, `${kind} injected`).toBeGreaterThanOrEqual(1);
        expect({
          lost: report.lost,
          duplicated: report.duplicated,
          reordered: report.reordered,
          phantom: report.phantom,
          duplicateEffects: report.duplicateEffects,
          missingEffects: report.missingEffects,
          balanceMismatches: report.balanceMismatches,
          unsentRows: report.unsentRows,
        }).toEqual({ lost: 0, duplicated: 0, reordered: 0, phantom: 0, duplicateEffects: 0, missingEffects: 0, balanceMismatches: 0, unsentRows: 0 });
        expect(report.ok).toBe(true);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
  );
});
