import { execFile } from 'node:child_process';
import { chmodSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const run = promisify(execFile);
const script = fileURLToPath(new URL('../../scripts/pg-cluster.sh', import.meta.url));

/**
 * A PostgreSQL cluster of a test's own (scripts/pg-cluster.sh: its own data directory and
 * port on 127.0.0.1), to stop and start without touching the shared server. With
 * `password`, every connection must give it (scram-sha-256), unlike the shared server's
 * trust authentication.
 */
export class OwnPostgres {
  /** Traversable by the `postgres` user the server runs as when the tests run as root. */
  readonly dir = (() => {
    const dir = mkdtempSync(join(tmpdir(), 'outbox-pg-'));
    chmodSync(dir, 0o755);
    return join(dir, 'cluster');
  })();

  constructor(
    readonly port: number,
    readonly options: { password?: string } = {},
  ) {}

  /** The `postgres` database's URL, as the superuser with `password` (percent-encoded) or the one given. */
  url(password = this.options.password): string {
    const auth = password === undefined ? 'postgres' : `postgres:${encodeURIComponent(password)}`;
    return `postgres://${auth}@127.0.0.1:${this.port}/postgres`;
  }

  async start(): Promise<void> {
    // The password goes by environment, never on a command line.
    const env = this.options.password === undefined ? process.env : { ...process.env, OUTBOX_PG_PASSWORD: this.options.password };
    await run('bash', [script, 'start', this.dir, String(this.port)], { timeout: 120_000, env });
  }

  async stop(): Promise<void> {
    await run('bash', [script, 'stop', this.dir], { timeout: 60_000 });
  }
}
