import { OutboxError } from './errors.js';

/**
 * The one lifecycle of `Relay` and `Consumer`: `start()` and `stop()` are idempotent; a
 * start that fails stops what it opened (as `stop()` does) and rejects, and `start()` again
 * gives the same error; after `stop()`, `start()` rejects with STOPPED: an instance runs
 * once, create a new one.
 */
export class Lifecycle {
  private started: Promise<void> | undefined;
  /** The start itself, not start()'s promise (that one waits for the clean-up of a failed start). */
  private opening: Promise<void> | undefined;
  private failed = false;
  private stopped: Promise<void> | undefined;

  constructor(
    private readonly name: string,
    private readonly open: () => Promise<void>,
    private readonly close: () => Promise<void>,
  ) {}

  start(): Promise<void> {
    if (this.stopped && !this.failed) return Promise.reject(new OutboxError('STOPPED', `${this.name} was stopped; create a new one`));
    if (!this.started) {
      this.opening = this.open();
      this.started = this.opening.catch(async (err: unknown) => {
        this.failed = true;
        await this.stop();
        throw err;
      });
    }
    return this.started;
  }

  stop(): Promise<void> {
    this.stopped ??= this.close();
    return this.stopped;
  }

  /** Settles once the start in progress (if any) has succeeded or failed: a close that must not race it waits for this. */
  async opened(): Promise<void> {
    await this.opening?.catch(() => undefined);
  }
}
