import { EventEmitter } from 'node:events';
import type { Logger } from './log.js';

/**
 * A typed emitter whose listeners cannot break the loop that emits (the relay's shard
 * workers, the consumer's consume loop): a listener that throws is logged and the others
 * still run; an `error` event without a listener is dropped, never thrown.
 */
export class SafeEmitter<Events extends object> {
  private readonly emitter = new EventEmitter();

  /** `owner` names the emitter in the log line of a throwing listener ("relay", "consumer"). */
  constructor(
    private readonly logger: () => Logger,
    private readonly owner: string,
  ) {}

  /** Subscribes `listener`; returns the function that unsubscribes it. */
  on<E extends keyof Events & string>(event: E, listener: (payload: Events[E]) => void): () => void {
    this.emitter.on(event, listener);
    return () => this.off(event, listener);
  }

  off<E extends keyof Events & string>(event: E, listener: (payload: Events[E]) => void): void {
    this.emitter.off(event, listener);
  }

  emit<E extends keyof Events & string>(event: E, payload: Events[E]): void {
    for (const listener of this.emitter.listeners(event)) {
      try {
        (listener as (p: Events[E]) => void)(payload);
      } catch (err) {
        this.logger().warn({ err, event }, `${this.owner} event listener threw`);
      }
    }
  }
}
