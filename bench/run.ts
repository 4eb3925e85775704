// `npm run bench`: every benchmark, against the running services, in one run, with the raw
// limits measured beside them: the relay (raw transactional producers, backlog drain,
// commit→read latency at a steady rate; `--repeats` runs of bench/relay-throughput.ts), the
// consumer variants (bench/consumer-throughput.ts) and the writers with and without the
// wake-up trigger (bench/writer-notify.ts). Writes bench/results/<time>-summary.json and
// bench/results/<time>-summary.svg (and docs/bench.svg with --chart-to-docs).
//
//   DATABASE_URL=... KAFKA_BROKERS=... node --import tsx bench/run.ts [--repeats 3] [--rows 20000] [--records 50000] [--quick]
//
// Exit code: 0 when every run verified exactly-once delivery of what it measured, 1 when
// one did not, 2 when a benchmark could not run.
import { execFileSync, spawn } from 'node:child_process';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { CONSUMER_VARIANTS, runConsumerBench, type ConsumerBenchResult } from './consumer-throughput.js';

const { values } = parseArgs({
  options: {
    repeats: { type: 'string', default: '3' },
    rows: { type: 'string', default: '20000' },
    records: { type: 'string', default: '50000' },
    quick: { type: 'boolean', default: false },
    'chart-to-docs': { type: 'boolean', default: false },
  },
});
const quick = values.quick;
const REPEATS = quick ? 1 : Number(values.repeats);
const ROWS = quick ? 5_000 : Number(values.rows);
const RECORDS = quick ? 10_000 : Number(values.records);
/** The relay memory run's backlog (bench/relay-memory.ts): the size the targets are set for. */
const MEMORY_ROWS = 200_000;
for (const [name, v, max] of [['repeats', REPEATS, 20], ['rows', ROWS, 10_000_000], ['records', RECORDS, 10_000_000]] as const) {
  if (!Number.isInteger(v) || v < 1 || v > max) {
    console.error(`bench: --${name} must be an integer in 1..${max}`);
    process.exit(2);
  }
}
const databaseUrl = process.env.DATABASE_URL;
const brokers = process.env.KAFKA_BROKERS;
if (!databaseUrl || !brokers) {
  console.error('bench: DATABASE_URL and KAFKA_BROKERS must be set (npm run services:up prints them)');
  process.exit(2);
}

const here = (path: string) => fileURLToPath(new URL(path, import.meta.url));
const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};
const round = (x: number, digits = 2) => Math.round(x * 10 ** digits) / 10 ** digits;

/** Runs a benchmark script as a child (its output passed through) and returns the JSON it wrote to `--out`. */
async function runScript<T>(script: string, args: string[]): Promise<{ code: number; result: T | undefined }> {
  const out = `${os.tmpdir()}/outbox-relay-bench-${process.pid}-${Date.now()}.json`;
  const code = await new Promise<number>((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', here(script), ...args, '--out', out], { stdio: ['ignore', 'inherit', 'inherit'] });
    child.on('error', reject);
    child.on('exit', (c) => resolve(c ?? 2));
  });
  const result = await readFile(out, 'utf8').then((text) => JSON.parse(text) as T, () => undefined);
  await rm(out, { force: true });
  return { code, result };
}

/** µs of CPU per row: the benchmark's process, PostgreSQL's processes, the broker's (bench/proc.ts). */
interface CpuPerRow {
  processUs: number;
  postgresUs: number;
  brokerUs: number;
}
const medianCpu = (runs: CpuPerRow[]): CpuPerRow => ({
  processUs: round(median(runs.map((r) => r.processUs)), 1),
  postgresUs: round(median(runs.map((r) => r.postgresUs)), 1),
  brokerUs: round(median(runs.map((r) => r.brokerUs)), 1),
});
interface RelayRun {
  ok: boolean;
  raw: { rowsPerSec: number; cpuUsPerRow: CpuPerRow };
  backlog: { rowsPerSecAfterStartup: number; ratioToRaw: number; cpuUsPerRow: CpuPerRow };
  steady: { latencyMs: { p50: number; p95: number; p99: number; max: number }; latencyCdfMs: [number, number][]; duplicates: number; missing: number };
  memory: { rssAtStartMb: number; rssPeakMb: number };
  high: { targetRate: number; latencyMs: { p50: number; p99: number }; duplicates: number; missing: number; raw: { windowMs: number; latencyMs: { p50: number; p99: number } }; p99ToRaw: number } | null;
}
interface RelayMemoryRun {
  ok: boolean;
  runs: Array<{ shards: number; rows: number; rowsPerSec: number; rssIdleMb: number; rssPeakMb: number }>;
}
interface ConsumerMemoryRun {
  ok: boolean;
  runs: Array<{ kind: string; settings: string; recordsPerSec: number; rssPeakMb: number }>;
}
interface WriterRun {
  medianTxPerSec: { relayBusy: number; relayIdle: number; withoutTrigger: number; liveRelay?: number; liveRelayWithoutTrigger?: number };
  ratio: { relayBusy: number; relayIdle: number; liveRelay?: number };
}

async function main(): Promise<number> {
  const startedAt = new Date();
  let failed = false;
  console.log(`bench: ${REPEATS} repeats; relay ${ROWS} rows, consumer ${RECORDS} records (${os.cpus().length} cpus, node ${process.version})`);

  const relayRuns: RelayRun[] = [];
  for (let r = 0; r < REPEATS; r++) {
    console.log(`\n== relay, run ${r + 1} of ${REPEATS}`);
    const { code, result } = await runScript<RelayRun>('./relay-throughput.ts', ['--rows', String(ROWS), ...(quick ? ['--seconds', '5'] : [])]);
    if (code === 2 || !result) {
      console.error('bench: the relay benchmark could not run');
      return 2;
    }
    if (!result.ok) failed = true;
    relayRuns.push(result);
  }

  console.log('\n== relay memory (the built CLI in a process of its own)');
  execFileSync('npm', ['run', '--silent', 'build'], { cwd: here('..'), stdio: 'inherit' });
  const memory = await runScript<RelayMemoryRun>('./relay-memory.ts', ['--rows', String(quick ? 20_000 : MEMORY_ROWS), '--no-build']);
  if (memory.code === 2 || !memory.result) {
    console.error('bench: the relay memory benchmark could not run');
    return 2;
  }
  if (!memory.result.ok) failed = true;

  console.log('\n== consumer');
  const consumer: ConsumerBenchResult = await runConsumerBench({ databaseUrl: databaseUrl!, brokers: brokers!, records: RECORDS, repeats: REPEATS, batchSize: 500 });
  if (consumer.runs.some((run) => run.variant.startsWith('eo-') && (run.duplicates > 0 || run.missing > 0))) failed = true;

  console.log('\n== consumer memory (the built package in a process of its own)');
  const consumerMemory = await runScript<ConsumerMemoryRun>('./consumer-memory.ts', ['--records', String(RECORDS), '--no-build']);
  if (consumerMemory.code === 2 || !consumerMemory.result) {
    console.error('bench: the consumer memory benchmark could not run');
    return 2;
  }
  if (!consumerMemory.result.ok) failed = true;

  console.log('\n== writers');
  const writers = await runScript<WriterRun>('./writer-notify.ts', ['--repeats', String(REPEATS), ...(quick ? ['--seconds', '3'] : [])]);
  if (writers.code !== 0 || !writers.result) {
    console.error('bench: the writer benchmark could not run');
    return 2;
  }

  const relay = {
    runs: relayRuns.length,
    rawRowsPerSec: Math.round(median(relayRuns.map((r) => r.raw.rowsPerSec))),
    drainRowsPerSec: Math.round(median(relayRuns.map((r) => r.backlog.rowsPerSecAfterStartup))),
    drainRatioToRaw: round(median(relayRuns.map((r) => r.backlog.ratioToRaw))),
    /** Where the drain's cores go, beside the raw producers': a drain bound by CPU runs at about the ratio of the totals. */
    cpuUsPerRow: { raw: medianCpu(relayRuns.map((r) => r.raw.cpuUsPerRow)), drain: medianCpu(relayRuns.map((r) => r.backlog.cpuUsPerRow)) },
    latencyMs: Object.fromEntries((['p50', 'p95', 'p99', 'max'] as const).map((q) => [q, round(median(relayRuns.map((r) => r.steady.latencyMs[q])), 1)])) as Record<'p50' | 'p95' | 'p99' | 'max', number>,
    /** Per run: [percent of records, ms] (bench/relay-throughput.ts). */
    latencyCdfMs: relayRuns.map((r) => r.steady.latencyCdfMs),
    /** The benchmark process (relay, writer and reader): RSS before the relay, and its peak. */
    rssMb: { atStart: round(median(relayRuns.map((r) => r.memory.rssAtStartMb)), 0), peak: round(median(relayRuns.map((r) => r.memory.rssPeakMb)), 0) },
    duplicates: relayRuns.reduce((n, r) => n + r.steady.duplicates + (r.high?.duplicates ?? 0), 0),
    missing: relayRuns.reduce((n, r) => n + r.steady.missing + (r.high?.missing ?? 0), 0),
    /** At the higher rate (1,000 rows/s), beside one raw transaction per 5 ms window. */
    high: relayRuns.every((r) => r.high)
      ? {
          rate: relayRuns[0]!.high!.targetRate,
          p50: round(median(relayRuns.map((r) => r.high!.latencyMs.p50)), 1),
          p99: round(median(relayRuns.map((r) => r.high!.latencyMs.p99)), 1),
          rawP50: round(median(relayRuns.map((r) => r.high!.raw.latencyMs.p50)), 1),
          rawP99: round(median(relayRuns.map((r) => r.high!.raw.latencyMs.p99)), 1),
          p99ToRaw: round(median(relayRuns.map((r) => r.high!.p99ToRaw))),
        }
      : null,
  };
  const summary = {
    benchmark: 'summary',
    ok: !failed,
    startedAt: startedAt.toISOString(),
    finishedAt: new Date().toISOString(),
    machine: { cpus: os.cpus().length, cpuModel: os.cpus()[0]?.model, memoryGiB: round(os.totalmem() / 2 ** 30, 1), node: process.version },
    parameters: { repeats: REPEATS, rows: ROWS, records: RECORDS },
    relay,
    relayMemory: memory.result.runs,
    consumer: { medians: consumer.medians, ratios: consumer.ratios, memory: consumerMemory.result.runs },
    writers: writers.result,
  };

  console.log('\n== summary (medians)');
  const lines = [
    `relay drain      ${relay.drainRowsPerSec} rows/s from the first batch; raw transactional producers ${relay.rawRowsPerSec} rows/s → ${relay.drainRatioToRaw}× (target ≥ 0.7)`,
    `relay CPU/row    drain: relay ${relay.cpuUsPerRow.drain.processUs} µs, PostgreSQL ${relay.cpuUsPerRow.drain.postgresUs}, broker ${relay.cpuUsPerRow.drain.brokerUs}; raw: producers ${relay.cpuUsPerRow.raw.processUs} µs, broker ${relay.cpuUsPerRow.raw.brokerUs}`,
    `relay latency    commit→read at 200 rows/s p50 ${relay.latencyMs.p50} ms, p99 ${relay.latencyMs.p99} ms (targets 10 / 30); duplicates ${relay.duplicates}, missing ${relay.missing}`,
    ...(relay.high
      ? [
          `relay latency    at ${relay.high.rate} rows/s p50 ${relay.high.p50} ms, p99 ${relay.high.p99} ms; raw, one transaction per 5 ms: p50 ${relay.high.rawP50}, p99 ${relay.high.rawP99} → p99 ${relay.high.p99ToRaw}× (target ≤ 2)`,
        ]
      : []),
    ...memory.result.runs.map(
      (r) => `relay memory     bin/outbox-relay, ${r.shards} shards, ${r.rows} rows: RSS peak ${r.rssPeakMb} MB (target ${r.shards <= 4 ? 150 : 250}), ${r.rowsPerSec} rows/s`,
    ),
    `consumer         ${CONSUMER_VARIANTS.map((v) => `${v} ${Math.round(consumer.medians[v]?.recordsPerSec ?? 0)}/s`).join(', ')}`,
    `consumer ratios  exactly-once per record ${round(consumer.ratios.eoPerRecordToAloPerRecord)}× at-least-once, batch handler ${round(consumer.ratios.eoBatchToAloMultiRow)}× multi-row (targets 0.7)`,
    ...consumerMemory.result.runs.map(
      (r) => `consumer memory  ${r.kind}, ${r.settings} settings: RSS peak ${r.rssPeakMb} MB (target 200), ${r.recordsPerSec} records/s`,
    ),
    `writers          with a busy relay ${writers.result.ratio.relayBusy}×, with an idle one ${writers.result.ratio.relayIdle}× the throughput without the trigger (target ≥ 0.9)` +
      (writers.result.ratio.liveRelay === undefined ? '' : `; with a live relay ${writers.result.ratio.liveRelay}× (${writers.result.medianTxPerSec.liveRelay} against ${writers.result.medianTxPerSec.liveRelayWithoutTrigger} tx/s)`),
  ];
  for (const line of lines) console.log(line);

  const dir = new URL('./results/', import.meta.url);
  await mkdir(dir, { recursive: true });
  const stamp = startedAt.toISOString().replaceAll(':', '-');
  await writeFile(new URL(`${stamp}-summary.json`, dir), `${JSON.stringify(summary, null, 2)}\n`);
  const svg = chart(summary);
  await writeFile(new URL(`${stamp}-summary.svg`, dir), svg);
  if (values['chart-to-docs']) await writeFile(new URL('../docs/bench.svg', import.meta.url), svg);
  console.log(`\nbench: ${failed ? 'FAILED: a run did not verify exactly-once delivery' : 'OK'} → bench/results/${stamp}-summary.{json,svg}`);
  return failed ? 1 : 0;
}

/** Horizontal bars, one group per measure, each bar labelled with its value. */
function chart(summary: {
  relay: {
    rawRowsPerSec: number;
    drainRowsPerSec: number;
    latencyMs: Record<string, number>;
    latencyCdfMs: [number, number][][];
    high: { rate: number; p50: number; p99: number; rawP50: number; rawP99: number } | null;
  };
  consumer: { medians: ConsumerBenchResult['medians'] };
  writers: WriterRun;
  startedAt: string;
}): string {
  type Bar = { label: string; value: number; unit: string; limit?: boolean };
  const groups: { title: string; bars: Bar[] }[] = [
    {
      title: 'Relay drain (rows/s)',
      bars: [
        { label: 'raw transactional producers', value: summary.relay.rawRowsPerSec, unit: '/s', limit: true },
        { label: 'relay, defaults', value: summary.relay.drainRowsPerSec, unit: '/s' },
      ],
    },
    {
      title: 'Consumer (records/s)',
      bars: CONSUMER_VARIANTS.map((v) => ({ label: v, value: Math.round(summary.consumer.medians[v]?.recordsPerSec ?? 0), unit: '/s', limit: v === 'plain' || v.startsWith('alo') })),
    },
    {
      title: 'Relay commit→read latency at 200 rows/s (ms)',
      bars: (['p50', 'p95', 'p99', 'max'] as const).map((q) => ({ label: q, value: summary.relay.latencyMs[q] ?? 0, unit: ' ms' })),
    },
    ...(summary.relay.high
      ? [
          {
            title: `Commit→read latency at ${summary.relay.high.rate.toLocaleString('en-US')} rows/s (ms)`,
            bars: [
              { label: 'raw, a transaction per 5 ms, p50', value: summary.relay.high.rawP50, unit: ' ms', limit: true },
              { label: 'relay p50', value: summary.relay.high.p50, unit: ' ms' },
              { label: 'raw, a transaction per 5 ms, p99', value: summary.relay.high.rawP99, unit: ' ms', limit: true },
              { label: 'relay p99', value: summary.relay.high.p99, unit: ' ms' },
            ],
          },
        ]
      : []),
    {
      title: 'Writers, 16 connections (tx/s)',
      bars: [
        { label: 'without the trigger', value: summary.writers.medianTxPerSec.withoutTrigger, unit: '/s', limit: true },
        { label: 'relay busy (no NOTIFY)', value: summary.writers.medianTxPerSec.relayBusy, unit: '/s' },
        { label: 'relay idle (NOTIFY)', value: summary.writers.medianTxPerSec.relayIdle, unit: '/s' },
      ],
    },
  ];
  const width = 760;
  const labelWidth = 220;
  const barArea = width - labelWidth - 110;
  const rowHeight = 22;
  let y = 40;
  const parts: string[] = [];
  for (const group of groups) {
    parts.push(`<text x="10" y="${y}" font-weight="bold">${escape(group.title)}</text>`);
    y += 10;
    const max = Math.max(1, ...group.bars.map((b) => b.value));
    for (const bar of group.bars) {
      const w = Math.max(1, Math.round((bar.value / max) * barArea));
      parts.push(
        `<text x="${labelWidth - 8}" y="${y + 15}" text-anchor="end">${escape(bar.label)}</text>`,
        `<rect x="${labelWidth}" y="${y + 3}" width="${w}" height="${rowHeight - 6}" fill="${bar.limit ? '#9aa5b1' : '#2f6fdf'}"/>`,
        `<text x="${labelWidth + w + 6}" y="${y + 15}">${bar.value.toLocaleString('en-US')}${escape(bar.unit)}</text>`,
      );
      y += rowHeight;
    }
    y += 18;
  }
  // Latency CDFs, one line per relay run: the share of records read within x ms.
  parts.push(`<text x="10" y="${y}" font-weight="bold">Relay commit→read latency at 200 rows/s, CDF per run (share of records read within x ms)</text>`);
  y += 14;
  const box = { x: labelWidth, y, w: barArea, h: 160 };
  const cdfs = summary.relay.latencyCdfMs.filter((c) => c.length > 0);
  const xMax = Math.max(1, ...cdfs.flatMap((c) => c.map(([, ms]) => ms)));
  const px = (ms: number) => box.x + (ms / xMax) * box.w;
  const py = (pct: number) => box.y + box.h - (pct / 100) * box.h;
  parts.push(`<rect x="${box.x}" y="${box.y}" width="${box.w}" height="${box.h}" fill="none" stroke="#ccc"/>`);
  for (const pct of [0, 25, 50, 75, 100]) parts.push(`<text x="${box.x - 6}" y="${py(pct) + 4}" text-anchor="end">${pct} %</text>`);
  for (const ms of [0, xMax / 2, xMax]) parts.push(`<text x="${px(ms)}" y="${box.y + box.h + 14}" text-anchor="middle">${Math.round(ms)} ms</text>`);
  const colours = ['#2f6fdf', '#d9822b', '#29a36a', '#8e44ad', '#c0392b'];
  cdfs.forEach((c, i) => {
    const points = [[0, 0] as [number, number], ...c].map(([pct, ms]) => `${px(ms).toFixed(1)},${py(pct).toFixed(1)}`).join(' ');
    parts.push(`<polyline points="${points}" fill="none" stroke="${colours[i % colours.length]}" stroke-width="2"/>`);
  });
  y += box.h + 30;
  const height = y + 10;
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="10" y="20" font-size="14">outbox-relay bench, ${escape(summary.startedAt.slice(0, 10))} (grey: the limits measured in the same run)</text>`,
    ...parts,
    '</svg>',
    '',
  ].join('\n');
}

function escape(text: string): string {
  return text.replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]!);
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(`bench: ${(err as Error).stack ?? String(err)}`);
    process.exit(2);
  },
);
