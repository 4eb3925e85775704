import { quoteSchema } from '../db/identifiers.js';
import { OutboxError } from '../errors.js';
import { collectStatus } from '../ops/status.js';
import { collectStuck, parseDuration, readRow } from '../ops/inspect.js';
import { bad, integerFlag, parse, parseIds, schemaFrom, withPool, helpAsked, flagsOf } from './args.js';
import { kafkaPropertiesFrom } from './kafka-config.js';

export const STUCK_HELP = `outbox-relay stuck [--older-than 5m] [--state pending|failed|dead] [--topic T] [--key K] [--limit N] [--json]

Outbox rows that should have gone and did not: unsent for longer than --older-than
(default 5m; units ms, s, m, h, d), oldest first, with attempts, last error and what holds
each back: its own failure, or an earlier failed or dead row of its key.

Exit codes: 0 done (also when nothing is stuck), 2 bad input (also a --topic no row has,
or a --key no unsent row has), 1 other errors.`;

export const SHOW_HELP = `outbox-relay show ID [--json]

One outbox row in full: state, attempts, its last failed attempts' errors (up to 10, with
when and which attempt), headers, a payload preview, and where it landed in Kafka when sent.
Exit codes: 0 found, 2 bad or unknown id, 1 other errors.`;


export async function stuckCommand(argv: string[]): Promise<number> {
  const values = flagsOf(argv, {
    'older-than': { type: 'string' },
    state: { type: 'string' },
    topic: { type: 'string' },
    key: { type: 'string' },
    limit: { type: 'string' },
    json: { type: 'boolean' },
  }, STUCK_HELP);
  if (!values) return 0;
  const olderThanMs = parseDuration((values['older-than'] as string | undefined) ?? '5m', 'older-than');
  const state = values.state as string | undefined;
  if (state !== undefined && !['pending', 'failed', 'dead'].includes(state)) bad(`--state must be pending, failed or dead, got ${JSON.stringify(state)}`);
  const limit = integerFlag('limit', values.limit as string | undefined, { min: 1 }) ?? 100;
  if (limit > 10_000) bad('--limit must be at most 10000');
  const q = quoteSchema(schemaFrom(values));
  const out = await withPool(values, (pool) =>
    collectStuck(pool, q, { olderThanMs, state: state ?? null, topic: (values.topic as string | undefined) ?? null, key: (values.key as string | undefined) ?? null, limit }),
  );
  if (values.json) console.log(JSON.stringify({ olderThanMs, rows: out }));
  else {
    for (const r of out) console.log(`${r.id}\t${r.topic}\t${r.key ?? ''}\t${r.state}\t${r.ageSeconds}s\tattempts ${r.attempts}\t${r.heldBack}`);
    console.log(`${out.length} stuck row(s) older than ${olderThanMs} ms${out.length === limit ? ` (first ${limit}; raise --limit for more)` : ''}`);
  }
  return 0;
}

export async function showCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parse(argv, { json: { type: 'boolean' } });
  if (helpAsked(values, SHOW_HELP)) return 0;
  if (positionals.length !== 1) bad('give one row id');
  const raw = positionals[0]!;
  const [id] = parseIds([raw], 'row id');
  const q = quoteSchema(schemaFrom(values));
  const row = await withPool(values, (pool) => readRow(pool, q, id!));
  if (!row) throw new OutboxError('NOT_FOUND', `no outbox row with id ${raw}`);
  if (values.json) console.log(JSON.stringify(row));
  else {
    const { errors, ...fields } = row;
    for (const [name, value] of Object.entries(fields)) {
      console.log(`${name.padEnd(14)} ${typeof value === 'object' && value !== null ? JSON.stringify(value) : String(value)}`);
    }
    console.log(`${'errors'.padEnd(14)} ${errors.length === 0 ? '(none)' : `the last ${errors.length} failed attempt(s), oldest first:`}`);
    for (const e of errors) console.log(`  ${e.at}  attempt ${e.attempt}  ${e.error}`);
  }
  return 0;
}

export const STATUS_HELP = `outbox-relay status [--json] [--brokers LIST] [--kafka-config FILE]

The outbox and its consumers at a glance: unsent rows per topic and per shard (pending,
failed, dead, oldest age), the serving relay group, shard owners (relay, since, lease
expiry) and live relays; per consumer group the stored offset per partition, with the log
end offset and lag when the brokers answer (--brokers or KAFKA_BROKERS; their SASL or TLS
properties from --kafka-config or OUTBOX_KAFKA_CONFIG), and dead letters not replayed.
Ends with a verdict: OK, DEGRADED or STUCK, and why.

Exit codes: 0 done (whatever the verdict), 2 bad input, 1 other errors.`;


export async function statusCommand(argv: string[]): Promise<number> {
  const values = flagsOf(argv, { json: { type: 'boolean' } }, STATUS_HELP);
  if (!values) return 0;
  const q = quoteSchema(schemaFrom(values));
  const brokers = (values.brokers as string | undefined) ?? process.env.KAFKA_BROKERS;
  const properties = kafkaPropertiesFrom(values);
  const result = await withPool(values, (pool) => collectStatus(pool, q, brokers ? { brokers, properties } : undefined));
  const { verdict, reason } = result;
  const oldest = result.unsent.oldestSeconds;
  const unsent = result.unsent.byTopic;
  const owners = result.relay.owners;
  const liveMembers = result.relay.members.filter((m) => m.live);
  if (values.json) {
    console.log(JSON.stringify(result));
    return 0;
  }
  console.log(`outbox: ${result.unsent.pending} pending, ${result.unsent.failed} failed, ${result.unsent.dead} dead; oldest unsent ${oldest} s`);
  for (const u of unsent) console.log(`  topic ${u.topic}\t${u.state}\t${u.rows}\toldest ${u.oldestSeconds} s`);
  console.log(`relay group: ${result.relay.group ?? '(none)'}${result.relay.shards ? `, ${result.relay.shards} shards` : ''}; ${liveMembers.length} live relay(s)`);
  for (const s of result.relay.byShard) console.log(`  shard ${s.shard}\tpending ${s.pending}\tfailed ${s.failed}\tdead ${s.dead}\toldest ${s.oldestSeconds} s`);
  for (const o of owners) console.log(`  shard ${o.shard}\towner ${o.owner ?? '(none)'}${o.owner ? `\tsince ${o.since}\tlease until ${o.leaseExpiresAt}` : ''}`);
  for (const c of result.consumers) {
    console.log(`consumer group ${c.group}: ${c.deadLettersPending} dead letter(s) not replayed`);
    for (const p of c.partitions) console.log(`  ${p.topic}[${p.partition}]\tstored ${p.storedOffset}\tend ${p.endOffset ?? '?'}\tlag ${p.lag ?? '?'}`);
  }
  console.log(`${verdict}: ${reason}`);
  return 0;
}
