import pg from 'pg';
import { notifyChannel, quoteSchema } from '../db/identifiers.js';
import type { Logger } from '../log.js';
import { PING_SQL } from '../sql/catalog.js';
import { currentSnapshotSql, listenSql, setMemberIdleSql, stillRunningSql } from '../sql/wakeup.js';

/** Busy this long without any worker waiting for rows: writers are asked to stop notifying. */
export const QUIET_AFTER_MS = 1_000;
/**
 * Claiming at least this many rows a second, the member asks writers to stop notifying
 * even though its workers find nothing now and then: rows come faster than a short poll.
 */
export const QUIET_ROWS_PER_SECOND = 500;
/**
 * While writers do not notify, a worker that found nothing claims again this soon, and
 * twice as late after each further empty claim, up to {@link QUIET_POLL_MAX_MS}: a shard
 * that stays empty costs PostgreSQL a claim every 20 ms, not every 5.
 */
export const QUIET_POLL_MS = 5;
export const QUIET_POLL_MAX_MS = 20;
const QUIET_CHECK_MS = 250;
/** The rate is counted over the last second, in four slices of {@link QUIET_CHECK_MS}. */
const RATE_SLICES = 4;
const CATCH_UP_FIRST_MS = 5;
/**
 * The catch-up's checks back off to once a second at most: a writer's transaction that ran
 * long (it read the flag before it was set) is published within a second of its commit,
 * not after a delay grown toward the poll interval.
 */
const CATCH_UP_MAX_MS = 1_000;
const LISTEN_PROBE_EVERY_MS = 10_000;
const LISTEN_PROBE_TIMEOUT_MS = 5_000;

/** The relay member whose `idle` flag says whether writers notify (migration 0012). */
export interface WakeupMember {
  group: string;
  relayId: string;
  /** Longest wait between catch-up checks: the workers' own poll interval. */
  pollIntervalMs: number;
}

/**
 * Wakes shard workers when rows are committed. One LISTEN connection per relay; if it
 * drops it is re-opened with backoff and everyone is woken (a notification may have been
 * missed). Workers also wake on their own poll timer, the safety net.
 *
 * Writers notify only while the member is `idle` (a worker waits for rows): the commits of
 * notifying transactions are serialised by PostgreSQL, and a busy relay claims again at
 * once anyway. The flag is cleared (the member turns quiet) after {@link QUIET_AFTER_MS}
 * with no worker waiting, or when the member claims {@link QUIET_ROWS_PER_SECOND} rows a
 * second or more: rows then come faster than a short poll would find them. While quiet, a
 * worker that finds nothing claims again after {@link QUIET_POLL_MS} (backing off to
 * {@link QUIET_POLL_MAX_MS} while it keeps finding nothing); the flag is set
 * again once workers find nothing and the rate has fallen below half that. A writer that
 * read the flag before it was set did not notify: its transaction is running in the
 * snapshot taken just after, and the workers are woken again as such transactions end
 * (checked from 5 ms, backing off to the poll interval), so its rows wait no longer than
 * its own commit.
 */
export class Wakeup {
  private waiters = new Set<() => void>();
  private client: pg.Client | undefined;
  private stopped = false;
  private reconnectDelayMs = 200;
  private reconnectTimer: NodeJS.Timeout | undefined;
  /** What this member asked of writers last (set before the statement saying so is sent). */
  private listening = true;
  /** Changes of the flag, one at a time, in order. */
  private flag: Promise<void> = Promise.resolve();
  private flagFailed = false;
  private lastWaitAt = Date.now();
  /** Rows claimed in each of the last {@link RATE_SLICES} slices of {@link QUIET_CHECK_MS}, the current one at `slice`. */
  private claimedRows = new Array<number>(RATE_SLICES).fill(0);
  private slice = 0;
  /** A worker found nothing while quiet since the last check. */
  private foundNothing = false;
  private quietTimer: NodeJS.Timeout | undefined;
  private catchUpTimer: NodeJS.Timeout | undefined;
  private readonly q: string;

  constructor(
    private readonly connectionString: string | undefined,
    private readonly pool: pg.Pool,
    private readonly schema: string,
    private readonly logger: Logger,
    private readonly applicationName: string,
    private readonly member: WakeupMember,
  ) {
    this.q = quoteSchema(schema);
  }

  async start(): Promise<void> {
    await this.connect();
    // A row left by an earlier run under the same relay id may say "busy".
    await this.listen();
    this.quietTimer = setInterval(() => this.quietIfBusy(), QUIET_CHECK_MS);
    this.quietTimer.unref();
  }

  /** Counts the rows a worker claimed, for the member's rate. */
  claimed(rows: number): void {
    this.claimedRows[this.slice]! += rows;
  }

  /** Turns quiet when busy or fed fast, idle again when fed slowly and workers find nothing. */
  private quietIfBusy(): void {
    const rowsPerSecond = this.claimedRows.reduce((a, b) => a + b, 0) * (1_000 / (QUIET_CHECK_MS * RATE_SLICES));
    this.slice = (this.slice + 1) % RATE_SLICES;
    this.claimedRows[this.slice] = 0;
    const foundNothing = this.foundNothing;
    this.foundNothing = false;
    if (this.flagFailed && this.listening) {
      this.flagFailed = false;
      void this.listen();
      return;
    }
    if (this.listening) {
      const busy = this.waiters.size === 0 && Date.now() - this.lastWaitAt >= QUIET_AFTER_MS;
      if (busy || rowsPerSecond >= QUIET_ROWS_PER_SECOND) this.quiet();
    } else if (foundNothing && rowsPerSecond < QUIET_ROWS_PER_SECOND / 2) {
      void this.listen();
    }
  }

  /** Tells writers not to notify; workers waiting for a notification poll shortly instead. */
  private quiet(): void {
    this.listening = false;
    const { group, relayId } = this.member;
    this.flag = this.flag
      .then(async () => {
        await this.pool.query(setMemberIdleSql(this.q), [group, relayId, false]);
      })
      .catch((err: unknown) => this.logger.debug({ err }, 'could not clear the idle flag; writers keep notifying'));
    // Their long waits count on notifications that may no longer come.
    this.wakeAll();
  }

  /**
   * Asks writers to notify again, then wakes every worker to claim once more, and again
   * as the writers that did not notify finish.
   */
  private listen(): Promise<void> {
    this.listening = true;
    this.lastWaitAt = Date.now();
    const member = this.member;
    this.flag = this.flag
      .then(async () => {
        if (this.stopped) return;
        await this.pool.query(setMemberIdleSql(this.q), [member.group, member.relayId, true]);
        const { rows } = await this.pool.query<{ snapshot: string }>(currentSnapshotSql());
        this.catchUp(rows[0]!.snapshot);
      })
      .catch((err: unknown) => {
        // Workers wait with their poll interval as the bound; the quiet check tries again.
        this.flagFailed = true;
        this.logger.warn({ err }, 'could not set the idle flag; relying on the poll interval');
      });
    return this.flag;
  }

  /** Wakes the workers now, and again each time fewer of the transactions running at `snapshot` are left. */
  private catchUp(snapshot: string): void {
    clearTimeout(this.catchUpTimer);
    this.wakeAll();
    let running = Number.POSITIVE_INFINITY;
    let delay = CATCH_UP_FIRST_MS;
    const check = async (): Promise<void> => {
      if (this.stopped) return;
      try {
        const { rows } = await this.pool.query<{ running: number }>(stillRunningSql(), [snapshot]);
        const now = rows[0]!.running;
        if (now < running) this.wakeAll();
        running = now;
        if (now === 0) return;
      } catch (err) {
        // Not knowing is treated as "some finished": the workers claim once more.
        this.logger.debug({ err }, 'catch-up check failed');
        this.wakeAll();
      }
      delay = Math.min(delay * 2, CATCH_UP_MAX_MS, this.member.pollIntervalMs);
      this.catchUpTimer = setTimeout(() => void check(), delay);
      this.catchUpTimer.unref();
    };
    this.catchUpTimer = setTimeout(() => void check(), delay);
    this.catchUpTimer.unref();
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
      await client.query(listenSql(notifyChannel(this.schema)));
      this.client = client;
      this.reconnectDelayMs = 200;
      this.wakeAll();
      this.probe(client);
    } catch (err) {
      this.logger.warn({ err }, 'could not listen for outbox notifications; polling until it can');
      this.scheduleReconnect(client);
    }
  }

  /**
   * Asks the listening connection something now and then: one that went silent (half-open)
   * raises no error, and notifications would stop without a word; an answer that does not
   * come within {@link LISTEN_PROBE_TIMEOUT_MS} has it re-opened.
   */
  private probe(client: pg.Client): void {
    const timer = setInterval(() => {
      if (this.client !== client) return clearInterval(timer);
      client.query({ text: PING_SQL, query_timeout: LISTEN_PROBE_TIMEOUT_MS } as pg.QueryConfig).catch((err: unknown) => {
        clearInterval(timer);
        this.logger.warn({ err }, 'listen connection does not answer; reconnecting');
        this.scheduleReconnect(client);
      });
    }, LISTEN_PROBE_EVERY_MS);
    timer.unref();
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

  /**
   * Resolves on the next notification, after `timeoutMs`, or when `signal` aborts. While
   * writers are told not to notify, after a short poll at most (see {@link QUIET_POLL_MS};
   * `emptyClaims` is how many claims in a row found nothing): the caller claims again soon.
   */
  async wait(timeoutMs: number, signal: AbortSignal, emptyClaims = 1): Promise<void> {
    if (signal.aborted) return;
    if (this.listening) {
      this.lastWaitAt = Date.now();
    } else {
      this.foundNothing = true;
      timeoutMs = Math.min(timeoutMs, QUIET_POLL_MS * 2 ** Math.max(0, emptyClaims - 1), QUIET_POLL_MAX_MS);
    }
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
    clearInterval(this.quietTimer);
    clearTimeout(this.catchUpTimer);
    await this.flag;
    this.wakeAll();
    const client = this.client;
    this.client = undefined;
    if (client) {
      client.removeAllListeners('end');
      await client.end().catch(() => undefined);
    }
  }
}
