import { PRODUCER_PRESETS, type ProducerPreset } from '../kafka/config.js';
import { createLogger } from '../log.js';
import { validateTopic } from '../outbox/validate.js';
import { runTry, TRY_SETTINGS, type TryReport, type TrySetting } from '../ops/try.js';
import { bad, brokersFrom, databaseUrlFrom, integerFlag, flagsOf } from './args.js';
import { kafkaPropertiesFrom } from './kafka-config.js';

export const TRY_HELP = `outbox-relay try [--preset reliable|throughput|low-latency] [--events N] [--key-buckets K]
  [--payload-bytes B] [--shards S] [--batch-size R] [--topic T [--force]] [--partitions P] [--json]

Tries relay settings on your own cluster, through the real relay: writes N outbox rows
(default 10000) whose keys fall into K buckets (default 100; 1 or 2 is a hot key) with
B-byte payloads (default 256) to a scratch outbox schema, publishes them with a relay of
S shards (default 4), R rows per Kafka transaction (default 500) and the preset (default
reliable), and reads them back read_committed. Prints events/s (enqueue, publish),
commit->visible latency p50/p99, batches, bytes, the partition histogram with its skew
(fullest partition / mean), sample records (key -> partition @ offset) and the
exactly-once check; --json prints the same as one JSON object.

Everything it creates is dropped at the end: the scratch schema, relay group, checkpoint
topic and the scratch topic (P partitions, default 6). --topic T publishes to T instead,
created if missing (and then deleted); a T that already holds records is refused unless
--force (its consumers would read the try's records; they are left in it).

Exit codes: 0 every record read back once, 1 duplicates or missing records, or another
error, 2 bad input, 130 interrupted (SIGINT, SIGTERM: what it created is dropped first).`;

/** A numeric setting from its flag, within its bounds. */
function setting(values: Record<string, unknown>, name: TrySetting): number {
  const { flag, min, max, fallback } = TRY_SETTINGS[name];
  const n = integerFlag(flag, values[flag] as string | undefined) ?? fallback;
  if (n < min || n > max) bad(`--${flag} must be an integer in ${min}..${max}, got ${n}`);
  return n;
}

const SETTINGS = Object.keys(TRY_SETTINGS) as TrySetting[];

const FLAGS = {
  ...Object.fromEntries(SETTINGS.map((name) => [TRY_SETTINGS[name].flag, { type: 'string' as const }])),
  preset: { type: 'string' },
  topic: { type: 'string' },
  force: { type: 'boolean' },
  json: { type: 'boolean' },
} as const;

/** A topic name Kafka accepts, or bad input. */
function topicFlag(value: string): string {
  try {
    return validateTopic(value);
  } catch (err) {
    return bad(`--topic: ${(err as Error).message}`);
  }
}

export async function tryCommand(argv: string[]): Promise<number> {
  const values = flagsOf(argv, FLAGS, TRY_HELP);
  if (!values) return 0;
  const str = (name: string) => values[name] as string | undefined;
  const preset = str('preset') ?? 'reliable';
  if (!(preset in PRODUCER_PRESETS)) bad(`--preset must be one of ${Object.keys(PRODUCER_PRESETS).join(', ')}, got ${JSON.stringify(preset)}`);
  const numbers = Object.fromEntries(SETTINGS.map((name) => [name, setting(values, name)])) as Record<TrySetting, number>;
  const topic = str('topic') === undefined ? undefined : topicFlag(str('topic')!);
  if (values.force && topic === undefined) bad('--force goes with --topic');
  if (topic !== undefined && str('partitions') !== undefined) bad('--partitions is for the scratch topic; a --topic keeps its own partitions (or is created with the default)');
  // Interrupted (Ctrl-C, SIGTERM): the try stops, drops what it created, then exits 130.
  const controller = new AbortController();
  const interrupt = () => controller.abort();
  process.once('SIGINT', interrupt);
  process.once('SIGTERM', interrupt);
  const report = await runTry({
    databaseUrl: databaseUrlFrom(values),
    connection: { brokers: brokersFrom(values), properties: kafkaPropertiesFrom(values) },
    preset: preset as ProducerPreset,
    ...numbers,
    topic,
    force: values.force === true,
    logger: createLogger({ level: process.env.LOG_LEVEL ?? 'error' }),
    signal: controller.signal,
  }).catch((err: unknown) => {
    if (controller.signal.aborted) return undefined;
    throw err;
  });
  process.off('SIGINT', interrupt);
  process.off('SIGTERM', interrupt);
  if (!report) {
    console.error('outbox-relay try: interrupted; the scratch schema, group and topics it created are dropped');
    return 130;
  }
  if (values.json) console.log(JSON.stringify(report));
  else printReport(report);
  return report.duplicates === 0 && report.missing === 0 ? 0 : 1;
}

function printReport(r: TryReport): void {
  const settings = Object.entries(r.settings)
    .map(([k, v]) => `${k}=${v}`)
    .join(', ');
  console.log(`preset ${r.preset} (${settings}), ${r.shards} shards, up to ${r.batchSize} rows per transaction`);
  console.log(`${r.events} events, ${r.keyBuckets} key bucket(s), ${r.payloadBytes}-byte payloads, topic ${r.topic} (${r.partitions} partitions)`);
  console.log(`enqueue   ${r.enqueuedPerSec} events/s`);
  console.log(`publish   ${r.publishedPerSec} events/s (${(r.elapsedMs / 1000).toFixed(1)} s from the first commit to the last record read)`);
  console.log(`latency   commit -> visible p50 ${r.latencyMs.p50} ms, p99 ${r.latencyMs.p99} ms`);
  console.log(`batches   ${r.batches}, ${r.meanBatchSize} rows each on average`);
  console.log(`bytes     ${r.rawBytes} raw (keys and values), ${r.compression} compression${r.compressedBytes === null ? '' : `, ${r.compressedBytes} compressed`}`);
  const max = Math.max(1, ...Object.values(r.partitionHistogram));
  console.log(`partitions (skew ${r.skew}: ${r.skew >= 1.5 ? 'uneven, a few keys carry most events' : 'even'})`);
  for (const [partition, count] of Object.entries(r.partitionHistogram)) {
    console.log(`  ${partition.padStart(3)} ${'#'.repeat(Math.round((count / max) * 40)).padEnd(40)} ${count}`);
  }
  console.log('samples (key -> partition @ offset)');
  for (const s of r.samples) console.log(`  ${s.key} -> ${s.partition} @ ${s.offset}`);
  console.log(r.duplicates === 0 && r.missing === 0 ? `exactly once: every event read back once` : `NOT exactly once: ${r.duplicates} duplicated, ${r.missing} missing`);
}
