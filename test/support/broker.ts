import { execFile } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import type pg from 'pg';
import { KafkaAdmin } from '../../src/kafka/admin.js';
import { createEffectsTable } from './consumer.js';
import { freshSchema } from './db.js';
import { freshTopic, kafkaConnection } from './kafka.js';
import { TestProducer } from './produce.js';
import { waitFor } from './wait.js';

const run = promisify(execFile);
const script = fileURLToPath(new URL('../../scripts/kafka-broker.sh', import.meta.url));

/**
 * A Kafka broker of a test's own (same jars as the shared one, other ports and data), for
 * tests that kill and restart it without disturbing the other test files. With
 * `saslUsers` (name → password), its port asks clients to log in (SASL_PLAINTEXT, PLAIN or
 * SCRAM-SHA-256: see scripts/kafka-broker.sh).
 */
export class OwnBroker {
  readonly dir = mkdtempSync(join(tmpdir(), 'outbox-broker-'));

  constructor(
    readonly port: number,
    readonly controllerPort: number,
    readonly options: { saslUsers?: Record<string, string> } = {},
  ) {}

  get brokers(): string {
    return `127.0.0.1:${this.port}`;
  }

  async start(): Promise<void> {
    const users = Object.entries(this.options.saslUsers ?? {}).map(([name, password]) => `${name}:${password}`);
    const env = users.length > 0 ? { ...process.env, KAFKA_SASL_USERS: users.join(',') } : process.env;
    await run('bash', [script, 'start', this.dir, String(this.port), String(this.controllerPort)], { timeout: 120_000, env });
  }

  /** Kills the broker process outright (no controlled shutdown) and waits until it is gone. */
  async kill(): Promise<void> {
    process.kill(this.pid(), 'SIGKILL');
    await waitFor(async () => (await run('bash', [script, 'status', this.dir]).then(() => false, () => true)), {
      timeoutMs: 30_000,
      message: 'broker process gone',
    });
  }

  /**
   * Freezes the broker process (SIGSTOP): connections stay open and nothing answers, as in a
   * network partition. Resolves once every thread of it has stopped (a signal is delivered
   * to each thread in its own time: a request sent just after the kill may still be answered).
   */
  async pause(): Promise<void> {
    const pid = this.pid();
    process.kill(pid, 'SIGSTOP');
    const stopped = () =>
      readdirSync(`/proc/${pid}/task`).every((task) => {
        try {
          // The state is the field after the parenthesised command name.
          return /\)\s+T/.test(readFileSync(`/proc/${pid}/task/${task}/stat`, 'utf8'));
        } catch {
          return true; // the thread has exited
        }
      });
    await waitFor(stopped, { timeoutMs: 10_000, intervalMs: 10, message: 'every broker thread stopped' });
  }

  resume(): void {
    process.kill(this.pid(), 'SIGCONT');
  }

  private pid(): number {
    return Number(readFileSync(join(this.dir, 'broker.pid'), 'utf8'));
  }

  async stop(): Promise<void> {
    await run('bash', [script, 'stop', this.dir], { timeout: 60_000 });
  }
}

/**
 * A broker of the test's own (to pause, bounce or kill) with an admin client, a producer
 * and a fresh topic on it, and a fresh schema with the effects table in `pool`'s database;
 * `close()` stops the broker and its clients.
 */
export async function ownBrokerWithEffects(pool: pg.Pool, port: number, controllerPort: number, partitions = 1) {
  const schema = await freshSchema(pool);
  await createEffectsTable(pool, schema);
  const broker = new OwnBroker(port, controllerPort);
  await broker.start();
  const connection = kafkaConnection(broker.brokers);
  const admin = new KafkaAdmin(connection);
  const producer = await TestProducer.connect(connection);
  const topic = await freshTopic(admin, partitions);
  return {
    schema,
    broker,
    producer,
    topic,
    async close(): Promise<void> {
      await producer.close();
      admin.close();
      await broker.stop();
    },
  };
}
