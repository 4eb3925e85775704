import { userInfo } from 'node:os';
import pg from 'pg';
import { OutboxError } from '../errors.js';
import { lagKey, measureLag } from '../ops/lag.js';
import { rewindOffsets, setOffset, storedOffsets } from '../ops/offsets.js';
import { actionOf, bad, brokersFrom, calendarDay, databaseUrlFrom, integerFlag, MUTATION_FLAGS, parse, schemaFrom, textFlag } from './args.js';
import { kafkaPropertiesFrom } from './kafka-config.js';

export const OFFSETS_HELP = `outbox-relay offsets <show|set|rewind> --group G [options]

Consumer offsets are stored in PostgreSQL (<schema>.consumer_offsets), next to the effects
they guard. These commands read and change them.

  offsets show   --group G [--topic T] [--json]
      Stored next offset per partition; with --brokers (or KAFKA_BROKERS) also the
      partition's end (last stable offset) and the lag (0 when only transaction markers
      and aborted records follow the stored offset).
  offsets set    --group G --topic T --partition P --offset N --reason "..."
      Sets the next offset of one partition (0 <= N <= end of the partition).
  offsets rewind --group G --topic T --to-time <ISO time> [--partition P] --reason "..."
      Moves every partition of T (or only P) back to the first record at or after the
      time (broker offsets-for-times). A partition already before that point is left as
      it is: a rewind never skips records.

set and rewind take --reason TEXT (required: recorded in operator_actions with the change,
in its transaction), --actor NAME (default: the OS user), --dry-run (print what would
change, change nothing) and --json.

set and rewind also forget the group's inbox entries at or after the new offsets, so the
records from there on are applied again instead of being skipped as duplicates.

A running consumer picks the change up without restart: every batch transaction compares
the stored offset with the one it expects and, when it differs, applies nothing and moves
its position there; idle partitions are checked every few seconds (offsetCheckIntervalMs).

Options: --database-url URL (env DATABASE_URL), --brokers LIST (env KAFKA_BROKERS),
--kafka-config FILE (librdkafka properties such as SASL, env OUTBOX_KAFKA_CONFIG),
--schema NAME (env OUTBOX_SCHEMA, default outbox), --help.
Exit codes: 0 done, 2 bad input or not found, 1 other errors.`;

const FLAGS = {
  group: { type: 'string' },
  topic: { type: 'string' },
  partition: { type: 'string' },
  offset: { type: 'string' },
  'to-time': { type: 'string' },
  json: { type: 'boolean' },
  ...MUTATION_FLAGS,
} as const;

function required(values: Record<string, string | boolean | undefined>, name: string): string {
  const value = values[name];
  if (typeof value !== 'string' || value.length === 0) throw new OutboxError('INVALID_ARGUMENT', `--${name} is required`);
  return value;
}

export async function offsetsCommand(argv: string[]): Promise<number> {
  const parsed = parse(argv, FLAGS);
  const values = parsed.values;
  const chosen = actionOf(parsed, OFFSETS_HELP, ['show', 'set', 'rewind'] as const);
  if ('exit' in chosen) return chosen.exit;
  const { action } = chosen;
  const group = required(values, 'group');
  const schema = schemaFrom(values);
  const dryRun = values['dry-run'] === true;
  const reason = textFlag(values.reason, 'reason', 2000);
  const actor = textFlag(values.actor, 'actor', 200) ?? userInfo().username;
  if (action === 'show' && (reason !== undefined || dryRun || values.actor !== undefined)) bad('--reason, --actor and --dry-run go with offsets set and rewind');
  if (action !== 'show' && reason === undefined && !dryRun) bad('--reason is required: say why, it is recorded in operator_actions');
  // Validate what needs no connection first, so bad input fails fast and clearly.
  let offset: number | undefined;
  let partition: number | undefined;
  let timestampMs: number | undefined;
  if (action === 'set') {
    required(values, 'topic');
    partition = integerFlag('partition', required(values, 'partition'), { min: 0 });
    offset = integerFlag('offset', required(values, 'offset'), { min: 0 });
  }
  if (action === 'rewind') {
    required(values, 'topic');
    partition = integerFlag('partition', values.partition as string | undefined, { min: 0 });
    timestampMs = parseTime(required(values, 'to-time'));
  }

  const pool = new pg.Pool({ connectionString: databaseUrlFrom(values), max: 2 });
  pool.on('error', () => undefined);
  try {
    const topic = values.topic as string | undefined;
    const properties = kafkaPropertiesFrom(values);
    if (action === 'show') {
      const rows = await storedOffsets(pool, { schema, group, topic });
      const brokers = (values.brokers as string | undefined) ?? process.env.KAFKA_BROKERS;
      const positions = rows.map((r) => ({ topic: r.topic, partition: r.partition, stored: r.nextOffset }));
      const lags = brokers && positions.length > 0 ? await measureLag({ brokers, clientId: 'outbox-relay-cli', properties }, positions).catch(() => undefined) : undefined;
      if (rows.length === 0) throw new OutboxError('NOT_FOUND', `consumer group ${JSON.stringify(group)} has no stored offsets for topic ${JSON.stringify(topic)}`);
      const shown = rows.map((r, i) => {
        const lag = lags?.get(lagKey(positions[i]!));
        return { topic: r.topic, partition: r.partition, nextOffset: r.nextOffset, endOffset: lag?.endOffset ?? null, lag: lag?.lag ?? null, updatedAt: r.updatedAt.toISOString() };
      });
      if (values.json) {
        console.log(JSON.stringify({ group, offsets: shown }));
        return 0;
      }
      console.log(['topic', 'partition', 'next_offset', 'end', 'lag', 'updated_at'].join('\t'));
      for (const r of shown) console.log([r.topic, r.partition, r.nextOffset, r.endOffset ?? '', r.lag ?? '', r.updatedAt].join('\t'));
      return 0;
    }
    const kafka = { brokers: brokersFrom(values), clientId: 'outbox-relay-cli', properties };
    const options = { audit: { actor, reason: reason ?? '' }, dryRun };
    const changed =
      action === 'set'
        ? await setOffset(pool, kafka, { schema, group, topic: topic!, partition: partition!, offset: offset! }, options)
        : await rewindOffsets(pool, kafka, { schema, group, topic: topic!, partition, toTime: new Date(timestampMs!) }, options);
    if (values.json) {
      console.log(JSON.stringify({ action, group, dryRun, changed: changed.map((c) => ({ ...c, previous: c.previous ?? null })) }));
      return 0;
    }
    for (const c of changed) {
      console.log(`${c.topic}[${c.partition}]: ${c.previous ?? '(none)'} -> ${c.next}`);
    }
    if (dryRun) console.log(`dry run: would change ${changed.length} partition(s) of group ${group}; nothing changed`);
    else if (changed.length === 0) console.log(`no partition of group ${group} moved (a rewind never moves an offset forward); nothing recorded`);
    else console.log(`changed ${changed.length} partition(s) of group ${group}; recorded in operator_actions as ${actor}`);
    return 0;
  } finally {
    await pool.end();
  }
}

/** ISO 8601 time, not in the future. */
function parseTime(text: string): number {
  const ms = Date.parse(text);
  if (!calendarDay(text) || Number.isNaN(ms)) {
    throw new OutboxError('INVALID_ARGUMENT', `--to-time must be an ISO 8601 time such as 2025-01-31T12:00:00Z, got ${JSON.stringify(text)}`);
  }
  if (ms > Date.now()) throw new OutboxError('INVALID_ARGUMENT', `--to-time ${text} is in the future`);
  return ms;
}
