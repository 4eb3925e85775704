import { userInfo } from 'node:os';
import { quoteSchema } from '../db/identifiers.js';
import { repairRows } from '../ops/repair.js';
import { bad, calendarDay, integerFlag, MUTATION_FLAGS, parse, parseIds, schemaFrom, textFlag, withPool, helpAsked } from './args.js';

export const RETRY_HELP = `outbox-relay retry ID... | --dead [--topic T] [--key K] [--since TIME] [--limit N]  --reason "..." [options]

Puts failed or dead outbox rows back to pending, due now, attempts reset. Per-key order
holds: a retried row is published after any earlier unsent row of its key and before the
later rows held behind it. Sent and skipped rows are refused (publishing them now would
overtake later rows of their key).

  ID...             row ids (decimal)
  --dead            every dead row matching --topic, --key, --since (created at or after)
  --limit N         at most N rows of --dead (default 1000, at most 100000)
  --reason TEXT     why (required; recorded in operator_actions)
  --actor NAME      who (default: the OS user)
  --dry-run         list what would change; change nothing
  --json            print the result as JSON

Exit codes: 0 done, 2 bad input (nothing changed: also unknown ids, a topic no row has, or
--dead matching no dead row), 1 other errors.`;

export const SKIP_HELP = `outbox-relay skip ID... --reason "..." [options]

Parks outbox rows for good (state skipped): never published, kept for audit, and no longer
holding back the later rows of their key. Pending, failed and dead rows may be skipped.

  --reason TEXT     why (required; recorded on the row and in operator_actions)
  --actor NAME      who (default: the OS user)
  --dry-run         list what would change; change nothing
  --json            print the result as JSON

Exit codes: 0 done, 2 bad input (nothing changed), 1 other errors.`;

const FLAGS = {
  ...MUTATION_FLAGS,
  json: { type: 'boolean' },
  dead: { type: 'boolean' },
  topic: { type: 'string' },
  key: { type: 'string' },
  since: { type: 'string' },
  limit: { type: 'string' },
} as const;

export function retryCommand(argv: string[]): Promise<number> {
  return repair('retry', argv);
}

export function skipCommand(argv: string[]): Promise<number> {
  return repair('skip', argv);
}

async function repair(command: 'retry' | 'skip', argv: string[]): Promise<number> {
  const { values, positionals } = parse(argv, FLAGS);
  if (helpAsked(values, command === 'retry' ? RETRY_HELP : SKIP_HELP)) return 0;
  // Everything that needs no database is checked first: bad input changes nothing.
  const dryRun = values['dry-run'] === true;
  const reason = textFlag(values.reason, 'reason', 2000);
  if (reason === undefined && !dryRun) bad('--reason is required: say why, it is recorded in operator_actions');
  const actor = textFlag(values.actor, 'actor', 200) ?? userInfo().username;
  const byFilter = values.dead === true;
  if (command === 'skip' && byFilter) bad('skip takes row ids, not --dead');
  if (byFilter && positionals.length > 0) bad('give row ids or --dead with filters, not both');
  if (!byFilter && positionals.length === 0) bad(command === 'retry' ? 'give row ids, or --dead' : 'give row ids');
  if (!byFilter && (values.topic !== undefined || values.key !== undefined || values.since !== undefined || values.limit !== undefined)) {
    bad('--topic, --key, --since and --limit filter --dead');
  }
  const ids = byFilter ? [] : parseIds(positionals, 'row id');
  const filter = byFilter
    ? {
        topic: textFlag(values.topic, 'topic', 249) ?? null,
        key: textFlag(values.key, 'key', 10_000) ?? null,
        since: values.since === undefined ? null : parseTime(values.since as string),
        limit: integerFlag('limit', values.limit as string | undefined, { min: 1 }) ?? 1000,
      }
    : undefined;
  if (filter && filter.limit > 100_000) bad('--limit must be at most 100000');

  const q = quoteSchema(schemaFrom(values));
  const result = await withPool(values, (pool) => repairRows(pool, q, { command, ids, filter, reason: reason ?? '', actor, dryRun }));
  if (values.json) console.log(JSON.stringify(result));
  else {
    for (const r of result.rows) console.log(`${r.id}\t${r.topic}\t${r.key ?? ''}\t${r.state} -> ${r.to}${command === 'retry' ? ` (attempts ${r.attempts} -> 0)` : ''}`);
    console.log(`${dryRun ? 'would change' : 'changed'} ${result.changed} row(s)${result.audit ? `; audit ${result.audit}` : ''}`);
  }
  return 0;
}

function parseTime(raw: string): string {
  const time = new Date(raw);
  if (!calendarDay(raw) || Number.isNaN(time.getTime())) bad(`--since must be an ISO time such as 2026-12-01T10:00:00Z, got ${JSON.stringify(raw.slice(0, 40))}`);
  return time.toISOString();
}
