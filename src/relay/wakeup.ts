import pg from 'pg';
import { notifyChannel } from '../db/identifiers.js';
import type { Logger } from '../log.js';

/**
 * Wakes shard workers when rows are committed. One LISTEN connection per relay; if it
 * drops it is re-opened with backoff and everyone is woken (a notification may have been
 * missed). Workers also wake on their own poll timer, the safety net.
 */
export class Wakeup {
  private waiters = new Set<() => void>();
  private client: pg.Client | undefined;
  private stopped = false;
  private reconnectDelayMs = 200;
  private reconnectTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly connectionString: string | undefined,
    private readonly pool: pg.Pool,
    private readonly schema: string,
    private readonly logger: Logger,
    private readonly applicationName = 'outbox-relay',
  ) {}

  async start(): Promise<void> {
    await this.connect();
  }

  private async connect(): Promise<void> {
    if (this.stopped) return;
    const client = this.connectionString
      ? new pg.Client({ connectionString: this.connectionString, keepAlive: true, application_name: this.applicationName })
      : new pg.Client({ ...(this.pool.options as pg.ClientConfig), application_name: this.applicationName });
    client.on('notification', () => this.wakeAll());
    client.on('error', (err) => {
      this.logger.warn({ err }, 'listen connection failed; reconnecting');
      this.scheduleReconnect(client);
    });
    client.on('end', () => this.scheduleReconnect(client));
    try {
      await client.connect();
      await client.query(`listen "${notifyChannel(this.schema)}"`);
      this.client = client;
      this.reconnectDelayMs = 200;
      this.wakeAll();
    } catch (err) {
      this.logger.warn({ err }, 'could not listen for outbox notifications; polling until it can');
      this.scheduleReconnect(client);
    }
  }

  private scheduleReconnect(client: pg.Client): void {
    if (this.stopped || this.reconnectTimer || (this.client && this.client !== client)) return;
    this.client = undefined;
    client.removeAllListeners('end');
    client.end().catch(() => undefined);
    this.wakeAll();
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = undefined;
      void this.connect();
    }, this.reconnectDelayMs);
    this.reconnectDelayMs = Math.min(this.reconnectDelayMs * 2, 10_000);
  }

  wakeAll(): void {
    const waiters = this.waiters;
    this.waiters = new Set();
    for (const wake of waiters) wake();
  }

  /** Resolves on the next notification, after `timeoutMs`, or when `signal` aborts. */
  wait(timeoutMs: number, signal: AbortSignal): Promise<void> {
    if (signal.aborted) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        signal.removeEventListener('abort', done);
        this.waiters.delete(done);
        resolve();
      };
      const timer = setTimeout(done, timeoutMs);
      signal.addEventListener('abort', done, { once: true });
      this.waiters.add(done);
    });
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.reconnectTimer);
    this.wakeAll();
    const client = this.client;
    this.client = undefined;
    if (client) {
      client.removeAllListeners('end');
      await client.end().catch(() => undefined);
    }
  }
}

export { sleep } from '../async.js';
