import { userInfo } from 'node:os';
import { quoteSchema } from '../db/identifiers.js';
import { OutboxError } from '../errors.js';
import { assertKnownGroup, listDeadLetters, preview, PREVIEW_BYTES } from '../ops/inspect.js';
import { requestDeadLetters } from '../ops/repair.js';
import { showDeadLetterSql } from '../sql/outbox-repair.js';
import { actionOf, bad, integerFlag, MUTATION_FLAGS, parse, parseIds, schemaFrom, textFlag, withPool } from './args.js';

export const DEAD_LETTERS_HELP = `outbox-relay dead-letters <list|show|replay|discard> --group G [options]

The consumer side: records a consumer group's handler failed on every attempt.

  dead-letters list    --group G [--topic T] [--all] [--limit N] [--json]
      Pending dead letters, newest first (--all: replayed and discarded ones too).
  dead-letters show    ID --group G [--json]
      One dead letter in full: position, error, attempts, headers, value preview.
  dead-letters replay  ID... --group G --reason "..." [--actor A] [--dry-run] [--json]
      Requests a replay: a running consumer of group G runs each record through its
      handler within a few seconds (only it has the handler), in a transaction of its own,
      and marks it replayed, or records the new error.
  dead-letters discard ID... --group G --reason "..." [--actor A] [--dry-run] [--json]
      Settles dead letters without applying them; kept with the reason, for audit.

replay and discard are recorded in operator_actions. Exit codes: 0 done, 2 bad input or
unknown group or id (nothing changed), 1 other errors.`;

const FLAGS = {
  group: { type: 'string' },
  topic: { type: 'string' },
  all: { type: 'boolean' },
  limit: { type: 'string' },
  json: { type: 'boolean' },
  ...MUTATION_FLAGS,
} as const;

export async function deadLettersCommand(argv: string[]): Promise<number> {
  const parsed = parse(argv, FLAGS);
  const values = parsed.values;
  const chosen = actionOf(parsed, DEAD_LETTERS_HELP, ['list', 'show', 'replay', 'discard'] as const);
  if ('exit' in chosen) return chosen.exit;
  const { action, rest } = chosen;
  const group = textFlag(values.group, 'group', 255) ?? bad('--group is required');
  const limit = integerFlag('limit', values.limit as string | undefined, { min: 1 }) ?? 100;
  if (limit > 10_000) bad('--limit must be at most 10000');
  const mutating = action === 'replay' || action === 'discard';
  const dryRun = values['dry-run'] === true;
  const reason = textFlag(values.reason, 'reason', 2000);
  if (mutating && reason === undefined && !dryRun) bad('--reason is required: say why, it is recorded in operator_actions');
  const actor = textFlag(values.actor, 'actor', 200) ?? userInfo().username;
  if (action !== 'list' && rest.length === 0) bad('give dead-letter ids');
  const targets = action === 'list' ? [] : parseIds(rest, 'dead-letter id');
  if (action === 'show' && targets.length !== 1) bad('show takes one dead-letter id');
  if (action === 'list' && rest.length > 0) bad(`unexpected argument ${JSON.stringify(rest[0])}`);

  const q = quoteSchema(schemaFrom(values));
  return withPool(values, async (pool) => {
    if (action !== 'list') await assertKnownGroup(pool, q, group);
    if (action === 'list') {
      const rows = await listDeadLetters(pool, q, { group, topic: (values.topic as string | undefined) ?? null, all: values.all === true, limit });
      if (values.json) console.log(JSON.stringify({ group, deadLetters: rows }));
      else {
        for (const r of rows) console.log(`${r.id}\t${r.topic}[${r.partition}]@${r.offset}\t${r.state}\tattempts ${r.attempts}\t${r.error}`);
        console.log(`${rows.length} dead letter(s)`);
      }
      return 0;
    }
    if (action === 'show') {
      const { rows } = await pool.query(showDeadLetterSql(q), [targets[0], group, PREVIEW_BYTES]);
      const r = rows[0];
      if (!r) throw new OutboxError('NOT_FOUND', `group ${group} has no dead letter ${targets[0]}`);
      const { value_head: head, key, ...fields } = r;
      const out = { ...fields, key: (key as Buffer | null)?.toString('utf8') ?? null, value: preview(head as Buffer | null, r.value_bytes as number | null) };
      if (values.json) console.log(JSON.stringify(out));
      else for (const [name, value] of Object.entries(out)) console.log(`${name.padEnd(20)} ${typeof value === 'object' && value !== null && !(value instanceof Date) ? JSON.stringify(value) : String(value)}`);
      return 0;
    }
    {
      const result = await requestDeadLetters(pool, q, { action: action, group, ids: targets, reason: reason ?? '', actor, dryRun });
      if (values.json) console.log(JSON.stringify(result));
      else {
        console.log(
          `${dryRun ? 'would ' : ''}${action === 'replay' ? 'request a replay of' : 'discard'} ${targets.length} dead letter(s): ${targets.join(', ')}` +
            `${result.audit ? `; audit ${result.audit}` : ''}${action === 'replay' && !dryRun ? `; a running consumer of group ${group} replays them within seconds` : ''}`,
        );
      }
      return 0;
    }
  });
}
