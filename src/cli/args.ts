import { parseArgs, type ParseArgsConfig } from 'node:util';
import { OutboxError } from '../errors.js';

/** Options every command takes. Flags win over environment variables, which win over defaults. */
export const COMMON_OPTIONS = {
  'database-url': { type: 'string' },
  brokers: { type: 'string' },
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
    return { values: values as ParsedArgs['values'], positionals };
  } catch (cause) {
    throw new OutboxError('INVALID_ARGUMENT', (cause as Error).message, { cause });
  }
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
