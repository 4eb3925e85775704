import { inspect } from 'node:util';
import { pino, type DestinationStream, type Logger } from 'pino';

export type { Logger };

/** Paths whose values never reach a log line. */
const REDACT_PATHS = [
  'password',
  '*.password',
  'databaseUrl',
  '*.databaseUrl',
  'connectionString',
  '*.connectionString',
  '*["sasl.password"]',
  '*["ssl.key.password"]',
  '*["sasl.oauthbearer.client.secret"]',
];

/**
 * The library's default logger: JSON to stdout (or `destination`) at `LOG_LEVEL` (default
 * `info`). Credentials never reach a line: the paths above are redacted, and every logged
 * object is walked at any depth by {@link redactSecrets}.
 */
export function createLogger(options: { level?: string; name?: string; destination?: DestinationStream } = {}): Logger {
  const config = {
    name: options.name ?? 'outbox-relay',
    level: options.level ?? process.env.LOG_LEVEL ?? 'info',
    redact: { paths: REDACT_PATHS, censor: '[redacted]' },
    formatters: { log: (object: Record<string, unknown>) => redactSecrets(object) as Record<string, unknown> },
  };
  return options.destination ? pino(config, options.destination) : pino(config);
}

/**
 * Keys whose values are secrets, wherever they appear (`sasl.password`, `ssl.key.password`,
 * `clientSecret`, `accessToken`, …). A bare `token` is the relay's fencing token: not secret.
 */
const SECRET_KEY = /password|passwd|passphrase|secret|credential|api[-_.]?key|private[-_.]?key|(access|refresh|auth|bearer|id)[-_.]?token|sasl\.oauthbearer\.config/i;
/** Keys whose string values are connection strings: their credentials are masked, the rest kept. */
const URL_KEY = /url$|uri$|connection[-_.]?string|dsn$/i;

/**
 * A copy of `value` with secrets masked at every depth: values of secret-looking keys
 * become `[redacted]`, credentials in connection strings `***`. Plain objects and arrays
 * are copied (cycles and depth bounded); errors, buffers and class instances such as pools
 * or loggers pass through (loggers and log serializers treat them on their own).
 */
export function redactSecrets(value: unknown, depth = 0, seen = new WeakSet<object>()): unknown {
  if (value === null || typeof value !== 'object') return value;
  if (seen.has(value) || depth > 10) return '[…]';
  if (Array.isArray(value)) {
    seen.add(value);
    return value.map((v) => redactSecrets(v, depth + 1, seen));
  }
  const proto = Object.getPrototypeOf(value) as unknown;
  if (proto !== Object.prototype && proto !== null) return value;
  seen.add(value);
  const out: Record<string, unknown> = {};
  for (const [key, v] of Object.entries(value)) {
    if (SECRET_KEY.test(key)) out[key] = v === undefined || v === null ? v : '[redacted]';
    else if (URL_KEY.test(key) && typeof v === 'string') out[key] = redactUrl(v);
    else out[key] = redactSecrets(v, depth + 1, seen);
  }
  return out;
}

/**
 * Makes `options` (resolved options handed out by the library) safe to print: JSON and
 * `util.inspect` show {@link redactSecrets}' copy without the logger, pool and functions.
 * The object itself is unchanged for the code that uses it.
 */
export function printableOptions<T extends object>(options: T): T {
  const view = () => {
    const copy: Record<string, unknown> = {};
    for (const [key, v] of Object.entries(options)) {
      if (typeof v === 'function' || key === 'logger' || key === 'pool') continue;
      copy[key] = v;
    }
    return redactSecrets(copy);
  };
  Object.defineProperty(options, 'toJSON', { value: view, enumerable: false });
  Object.defineProperty(options, inspect.custom, { value: () => view(), enumerable: false });
  return options;
}

/** `postgres://user:secret@host/db` → `postgres://user:***@host/db`, for log lines. */
export function redactUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = '***';
    for (const key of [...parsed.searchParams.keys()]) {
      if (/pass|secret|token|key/i.test(key)) parsed.searchParams.set(key, '***');
    }
    return parsed.toString();
  } catch {
    return url.replace(/\/\/([^:/@]+):[^@]*@/, '//$1:***@');
  }
}
