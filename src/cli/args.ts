import { parseArgs, type ParseArgsConfig } from 'node:util';
import pg from 'pg';
import { OutboxError } from '../errors.js';

/** Options every command takes. Flags win over environment variables, which win over defaults. */
export const COMMON_OPTIONS = {
  'database-url': { type: 'string' },
  brokers: { type: 'string' },
  'kafka-config': { type: 'string' },
  schema: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const satisfies ParseArgsConfig['options'];

export interface ParsedArgs {
  values: Record<string, string | boolean | undefined>;
  positionals: string[];
}

export function parse(argv: string[], options: NonNullable<ParseArgsConfig['options']>): ParsedArgs {
  try {
    const { values, positionals } = parseArgs({ args: argv, options: { ...COMMON_OPTIONS, ...options }, allowPositionals: true, strict: true });
    return { values: values, positionals };
  } catch (cause) {
    throw new OutboxError('INVALID_ARGUMENT', (cause as Error).message, { cause });
  }
}

/** The flags of every audited mutation: why, who, and whether only to show what would change. */
export const MUTATION_FLAGS = {
  reason: { type: 'string' },
  actor: { type: 'string' },
  'dry-run': { type: 'boolean' },
} as const;

/** With --help, prints the command's help and answers true (the command then exits 0). */
export function helpAsked(values: ParsedArgs['values'], help: string): boolean {
  if (!values.help) return false;
  console.log(help);
  return true;
}

/** Refuses arguments a command that takes none was given. */
export function noArguments(positionals: readonly string[]): void {
  if (positionals.length > 0) bad(`unexpected argument ${JSON.stringify(positionals[0])}`);
}

/** The flags of a command that takes no arguments; undefined when --help was asked (its help printed). */
export function flagsOf(argv: string[], options: NonNullable<ParseArgsConfig['options']>, help: string): ParsedArgs['values'] | undefined {
  const { values, positionals } = parse(argv, options);
  if (helpAsked(values, help)) return undefined;
  noArguments(positionals);
  return values;
}

/**
 * A command of actions (`offsets show|set|rewind`): its action, or the exit code when the
 * help is what was asked for (0) or no action was given (2, with the help printed). An
 * unknown action is refused (INVALID_ARGUMENT) naming the known ones.
 */
export function actionOf<A extends string>(parsed: ParsedArgs, help: string, actions: readonly A[]): { action: A; rest: string[] } | { exit: number } {
  const [action, ...rest] = parsed.positionals;
  if (parsed.values.help || action === undefined || action === 'help') {
    console.log(help);
    return { exit: parsed.values.help || action === 'help' ? 0 : 2 };
  }
  if (!(actions as readonly string[]).includes(action)) {
    const list = actions.length > 1 ? `${actions.slice(0, -1).join(', ')} or ${actions.at(-1)}` : actions[0];
    bad(`unknown action ${JSON.stringify(action)}: use ${list}`);
  }
  return { action: action as A, rest };
}

export function databaseUrlFrom(values: { 'database-url'?: string | boolean | undefined }): string {
  const url = (values['database-url'] as string | undefined) ?? process.env.DATABASE_URL;
  if (!url) throw new OutboxError('INVALID_ARGUMENT', 'no database: pass --database-url or set DATABASE_URL');
  return url;
}

export function brokersFrom(values: { brokers?: string | boolean | undefined }): string {
  const brokers = (values.brokers as string | undefined) ?? process.env.KAFKA_BROKERS;
  if (!brokers) throw new OutboxError('INVALID_ARGUMENT', 'no Kafka brokers: pass --brokers or set KAFKA_BROKERS');
  return brokers;
}

export function schemaFrom(values: { schema?: string | boolean | undefined }): string {
  return (values.schema as string | undefined) ?? process.env.OUTBOX_SCHEMA ?? 'outbox';
}

/** Parses a non-negative integer flag, with a clear error naming the flag. */
export function integerFlag(name: string, value: string | undefined, options: { min?: number } = {}): number | undefined {
  if (value === undefined) return undefined;
  if (!/^-?\d+$/.test(value)) throw new OutboxError('INVALID_ARGUMENT', `--${name} must be an integer, got ${JSON.stringify(value)}`);
  const n = Number(value);
  if (options.min !== undefined && n < options.min) throw new OutboxError('INVALID_ARGUMENT', `--${name} must be >= ${options.min}, got ${n}`);
  return n;
}

/** Bad input: exit 2, nothing changed. */
export function bad(message: string): never {
  throw new OutboxError('INVALID_ARGUMENT', message);
}

const MAX_ID = 9223372036854775807n;

/** Positive decimal ids (a bigint column's range), deduplicated, in canonical form; `what` names them in errors. */
export function parseIds(raw: readonly string[], what: string): string[] {
  return [
    ...new Set(
      raw.map((r) => {
        if (!/^\d{1,19}$/.test(r) || BigInt(r) < 1n || BigInt(r) > MAX_ID) bad(`${what} ${JSON.stringify(r.slice(0, 40))} is not a positive decimal id`);
        return BigInt(r).toString();
      }),
    ),
  ];
}

/**
 * Whether an ISO time's leading `YYYY-MM-DD` names a day of the calendar: `Date` would
 * read `2026-02-30` as 2 March without a word.
 */
export function calendarDay(raw: string): boolean {
  const match = /^(\d{4})-(\d{2})-(\d{2})/.exec(raw);
  if (!match) return false;
  const [year, month, day] = [Number(match[1]), Number(match[2]), Number(match[3])];
  return month >= 1 && month <= 12 && day >= 1 && day <= new Date(Date.UTC(year, month, 0)).getUTCDate();
}

/** A text flag of 1-`max` characters without NUL, or undefined when not given. */
export function textFlag(value: unknown, name: string, max: number): string | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'string' || value.length === 0 || value.length > max || value.includes('\u0000')) bad(`--${name} must be 1-${max} characters`);
  return value;
}

/** Runs `run` with a one-connection pool on the command's database, closed afterwards. */
export async function withPool<T>(values: { 'database-url'?: string | boolean | undefined }, run: (pool: pg.Pool) => Promise<T>): Promise<T> {
  const pool = new pg.Pool({ connectionString: databaseUrlFrom(values), max: 1 });
  pool.on('error', () => undefined);
  try {
    return await run(pool);
  } finally {
    await pool.end();
  }
}
