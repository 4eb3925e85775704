// One relay of the fault-injection suite, in a process of its own. Configured by the
// CHAOS_RELAY environment variable (RelayOptions as JSON). SIGUSR2 arms a kill at the
// next instant between a Kafka commit and the PostgreSQL mark, SIGUSR1 disarms it; SIGTERM
// stops gracefully.
import { createLogger } from '../src/log.js';
import { installFaultHook } from '../src/relay/faults.js';
import { createRelay } from '../src/relay/relay.js';
import type { RelayOptions } from '../src/relay/options.js';

const options = JSON.parse(process.env.CHAOS_RELAY ?? '{}') as RelayOptions;
const say = (event: string, data: Record<string, unknown> = {}) => process.stdout.write(`${JSON.stringify({ event, at: Date.now(), ...data })}\n`);

let armed = false;
process.on('SIGUSR2', () => {
  armed = true;
  say('armed');
});
process.on('SIGUSR1', () => {
  armed = false;
  say('disarmed');
});
installFaultHook((point) => {
  if (armed && point === 'after-kafka-commit') {
    say('killing', { point });
    process.kill(process.pid, 'SIGKILL');
  }
});

const relay = createRelay({ ...options, logger: createLogger({ level: process.env.CHAOS_LOG_LEVEL ?? 'warn' }) });
relay.events.on('shardAcquired', (e) => say('shardAcquired', e));
relay.events.on('rowFailed', (e) => say('rowFailed', e));
process.on('SIGTERM', () => {
  void relay.stop().then(() => process.exit(0));
});
await relay.start();
say('started');
