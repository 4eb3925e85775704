import { PRODUCER_PRESETS, type ProducerPreset } from '../kafka/config.js';
import { OutboxError } from '../errors.js';
import { runTry, TRY_SETTINGS, type TryReport, type TrySetting } from '../ops/try.js';
import type { Relay } from './relay.js';

/** The dashboard's tries are smaller than the CLI's: a request waits for its whole run. */
export const PLAYGROUND_MAX_EVENTS = 100_000;

/**
 * The dashboard's "Try it" panel (`outbox-relay relay --playground`): a try as the CLI's
 * `outbox-relay try` runs it, on the relay's own database and brokers but a scratch schema,
 * group and topic of its own, one at a time. `body` is the request's JSON.
 */
export class Playground {
  private running: Promise<TryReport> | undefined;

  constructor(private readonly relay: Relay) {}

  async run(body: Record<string, unknown>): Promise<TryReport> {
    const options = this.relay.options;
    if (!options.databaseUrl) throw new OutboxError('INVALID_OPTIONS', 'the playground needs the relay to be given a database URL (it opens connections of its own)');
    if (this.running) throw new OutboxError('BUSY', 'a try is running: wait for its result');
    const preset = body.preset ?? 'reliable';
    if (typeof preset !== 'string' || !(preset in PRODUCER_PRESETS)) {
      throw new OutboxError('INVALID_ARGUMENT', `preset must be one of ${Object.keys(PRODUCER_PRESETS).join(', ')}`);
    }
    const int = (name: TrySetting, max: number = TRY_SETTINGS[name].max): number => {
      const { min, fallback } = TRY_SETTINGS[name];
      const value = body[name] ?? Math.min(fallback, max);
      if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
        throw new OutboxError('INVALID_ARGUMENT', `${name} must be an integer in ${min}..${max}`);
      }
      return value;
    };
    const run = runTry({
      databaseUrl: options.databaseUrl,
      connection: options.connection,
      preset: preset as ProducerPreset,
      events: int('events', PLAYGROUND_MAX_EVENTS),
      keyBuckets: int('keyBuckets'),
      payloadBytes: int('payloadBytes', 100_000),
      shards: int('shards'),
      batchSize: int('batchSize'),
      partitions: int('partitions'),
      logger: options.logger,
    });
    this.running = run;
    try {
      return await run;
    } finally {
      this.running = undefined;
    }
  }
}
