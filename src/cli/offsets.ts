import pg from 'pg';
import { TABLE_EXISTS_SQL } from '../sql/catalog.js';
import { forgetInboxSql, groupKnownSql, groupOffsetsSql, partitionOffsetsSql, rewindOffsetsSql, setOffsetsSql } from '../sql/consumer-offsets.js';
import { quoteSchema } from '../db/identifiers.js';
import { withTransaction } from '../db/transaction.js';
import { OutboxError } from '../errors.js';
import { KafkaAdmin } from '../kafka/admin.js';
import { lagKey, measureLag } from '../ops/lag.js';
import { brokersFrom, calendarDay, databaseUrlFrom, integerFlag, parse, schemaFrom } from './args.js';
import { kafkaPropertiesFrom } from './kafka-config.js';

export const OFFSETS_HELP = `outbox-relay offsets <show|set|rewind> --group G [options]

Consumer offsets are stored in PostgreSQL (<schema>.consumer_offsets), next to the effects
they guard. These commands read and change them.

  offsets show   --group G [--topic T]
      Stored next offset per partition; with --brokers (or KAFKA_BROKERS) also the
      partition's end (last stable offset) and the lag (0 when only transaction markers
      and aborted records follow the stored offset).
  offsets set    --group G --topic T --partition P --offset N
      Sets the next offset of one partition (0 <= N <= end of the partition).
  offsets rewind --group G --topic T --to-time <ISO time> [--partition P]
      Moves every partition of T (or only P) back to the first record at or after the
      time (broker offsets-for-times). A partition already before that point is left as
      it is: a rewind never skips records.

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
} as const;

function required(values: Record<string, string | boolean | undefined>, name: string): string {
  const value = values[name];
  if (typeof value !== 'string' || value.length === 0) throw new OutboxError('INVALID_ARGUMENT', `--${name} is required`);
  return value;
}

export async function offsetsCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parse(argv, FLAGS);
  const action = positionals[0];
  if (values.help || action === undefined || action === 'help') {
    console.log(OFFSETS_HELP);
    return values.help || action === 'help' ? 0 : 2;
  }
  if (!['show', 'set', 'rewind'].includes(action)) {
    throw new OutboxError('INVALID_ARGUMENT', `unknown action ${JSON.stringify(action)}: use show, set or rewind`);
  }
  const group = required(values, 'group');
  const schema = schemaFrom(values);
  const q = quoteSchema(schema);
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
  let admin: KafkaAdmin | undefined;
  try {
    const table = await pool.query<{ table: string | null }>(TABLE_EXISTS_SQL, [`${q}.consumer_offsets`]);
    if (!table.rows[0]?.table) throw new OutboxError('NOT_FOUND', `schema ${schema} has no consumer_offsets table: run \`outbox-relay migrate\``);
    const rows = await showRows(pool, q, group, values.topic as string | undefined);
    if (rows.length === 0 && (action !== 'show' || values.topic === undefined)) {
      const known = await pool.query(groupKnownSql(q), [group]);
      if (known.rows.length === 0) throw new OutboxError('NOT_FOUND', `consumer group ${JSON.stringify(group)} has no stored offsets in schema ${schema}`);
    }
    const brokers = action === 'show' ? ((values.brokers as string | undefined) ?? process.env.KAFKA_BROKERS) : brokersFrom(values);
    const properties = kafkaPropertiesFrom(values);
    admin = brokers ? new KafkaAdmin({ brokers, clientId: 'outbox-relay-cli', properties }) : undefined;

    if (action === 'show') {
      const positions = rows.map((r) => ({ topic: r.topic, partition: r.partition, stored: Number(r.nextOffset) }));
      const lags = brokers && positions.length > 0 ? await measureLag({ brokers, clientId: 'outbox-relay-cli', properties }, positions).catch(() => undefined) : undefined;
      console.log(['topic', 'partition', 'next_offset', 'end', 'lag', 'updated_at'].join('\t'));
      for (const [i, r] of rows.entries()) {
        const lag = lags?.get(lagKey(positions[i]!));
        console.log([r.topic, r.partition, positions[i]!.stored, lag?.endOffset ?? '', lag?.lag ?? '', r.updatedAt.toISOString()].join('\t'));
      }
      return 0;
    }

    const topic = values.topic as string;
    const partitions = await topicPartitions(admin!, topic);
    if (partition !== undefined && !partitions.includes(partition)) {
      throw new OutboxError('NOT_FOUND', `topic ${topic} has no partition ${partition} (it has ${partitions.length})`);
    }
    const chosen = partition === undefined ? partitions : [partition];
    const ends = await admin!.endOffsets(topic, chosen, { committed: true });
    let targets: Map<number, number>;
    if (action === 'set') {
      const end = ends.get(partition!) ?? 0;
      if (offset! > end) throw new OutboxError('INVALID_ARGUMENT', `--offset ${offset} is beyond the end of ${topic}[${partition}] (${end})`);
      targets = new Map([[partition!, offset!]]);
    } else {
      if (!rows.some((r) => r.topic === topic)) {
        throw new OutboxError('NOT_FOUND', `consumer group ${JSON.stringify(group)} has no stored offsets for topic ${topic}: nothing to rewind`);
      }
      targets = await admin!.offsetsForTime(topic, chosen, timestampMs!);
    }
    const topicId = (await admin!.topicIds([topic])).get(topic) ?? null;
    const changed = await applyOffsets(pool, q, group, topic, targets, action === 'rewind', topicId);
    for (const c of changed) {
      console.log(`${topic}[${c.partition}]: ${c.previous ?? '(none)'} -> ${c.next}`);
    }
    return 0;
  } finally {
    admin?.close();
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

async function showRows(pool: pg.Pool, q: string, group: string, topic: string | undefined) {
  const { rows } = await pool.query<{ topic: string; partition: number; next_offset: string; updated_at: Date }>(groupOffsetsSql(q), [group, topic ?? null]);
  return rows.map((r) => ({ topic: r.topic, partition: r.partition, nextOffset: r.next_offset, updatedAt: r.updated_at }));
}

async function topicPartitions(admin: KafkaAdmin, topic: string): Promise<number[]> {
  const [description] = await admin.describeTopics([topic]);
  if (!description || description.error) throw new OutboxError('NOT_FOUND', `topic ${topic} does not exist`);
  return description.partitions.map((p) => p.partition).sort((a, b) => a - b);
}

/**
 * Writes the new offsets and forgets the inbox entries at or after them, in one
 * transaction. A rewind only moves offsets back (see rewindOffsetsSql) and only the
 * partitions that moved lose inbox entries; `set` writes exactly what it was given. Both
 * record the topic's current id with the offsets.
 */
async function applyOffsets(pool: pg.Pool, q: string, group: string, topic: string, targets: Map<number, number>, rewind: boolean, topicId: string | null) {
  const partitions = [...targets.keys()];
  const params = [group, partitions.map(() => topic), partitions, partitions.map((p) => targets.get(p)!), topicId];
  return withTransaction(pool, async (client) => {
      const before = await client.query<{ partition: number; next_offset: string }>(
        partitionOffsetsSql(q),
        [group, topic, partitions],
      );
      const previous = new Map(before.rows.map((r) => [r.partition, Number(r.next_offset)]));
      const { rows } = await client.query<{ partition: number; next_offset: string }>(rewind ? rewindOffsetsSql(q) : setOffsetsSql(q), params);
      const moved = [group, rows.map(() => topic), rows.map((r) => r.partition), rows.map((r) => r.next_offset), topicId];
      await client.query(forgetInboxSql(q), moved);
      return rows.map((r) => ({ partition: r.partition, next: Number(r.next_offset), previous: previous.get(r.partition) }));
  });
}
