import Kafka from '@confluentinc/kafka-javascript';
import type { Message } from '@confluentinc/kafka-javascript';
import { inject } from 'vitest';
import { KafkaAdmin } from '../../src/kafka/admin.js';
import type { KafkaConnection } from '../../src/kafka/config.js';
import { uniqueName, waitFor } from './wait.js';

export function kafkaConnection(brokers: string = inject('kafkaBrokers')): KafkaConnection {
  return { brokers, clientId: 'outbox-relay-test' };
}

/** Creates a topic with a unique name and returns the name. */
export async function freshTopic(admin: KafkaAdmin, partitions = 3, config: Record<string, string> = {}): Promise<string> {
  const topic = uniqueName('t').replaceAll('_', '-');
  await admin.createTopic({ topic, num_partitions: partitions, replication_factor: 1, config });
  await waitFor(async () => !(await admin.describeTopics([topic]))[0]?.error, { timeoutMs: 30_000, message: `topic ${topic} in metadata` });
  return topic;
}

export interface ReadOptions {
  /** Stop once this many records arrived (and then wait `settleMs` for strays). */
  expected: number;
  timeoutMs?: number;
  /** After `expected` records, keep reading this long to catch duplicates. Default 1500 ms. */
  settleMs?: number;
  isolation?: 'read_committed' | 'read_uncommitted';
}

/**
 * Reads a topic from the beginning of every partition with a read_committed consumer (no
 * group offsets) until `expected` records arrived, then keeps reading for `settleMs` so
 * that duplicates beyond the expected count are seen too.
 */
export async function readTopic(connection: KafkaConnection, topic: string, partitions: number, options: ReadOptions): Promise<Message[]> {
  const consumer = new Kafka.KafkaConsumer(
    {
      'bootstrap.servers': String(connection.brokers),
      'group.id': uniqueName('reader'),
      'enable.auto.commit': false,
      'isolation.level': options.isolation ?? 'read_committed',
      'log.connection.close': false,
      ...connection.properties,
    },
    {},
  );
  await new Promise<void>((resolve, reject) => consumer.connect({ timeout: 10_000 }, (err) => (err ? reject(err) : resolve())));
  try {
    consumer.assign(Array.from({ length: partitions }, (_, partition) => ({ topic, partition, offset: 0 })));
    const messages: Message[] = [];
    const deadline = Date.now() + (options.timeoutMs ?? 60_000);
    let settleUntil = Infinity;
    while (Date.now() < Math.min(deadline, settleUntil)) {
      const batch = await new Promise<Message[]>((resolve, reject) =>
        consumer.consume(500, (err, msgs) => (err ? reject(err) : resolve(msgs))),
      );
      messages.push(...batch);
      if (messages.length >= options.expected && settleUntil === Infinity) settleUntil = Date.now() + (options.settleMs ?? 1_500);
    }
    return messages;
  } finally {
    await new Promise<void>((resolve) => consumer.disconnect(() => resolve()));
  }
}

export function headerValue(message: Message, name: string): string | undefined {
  for (const header of message.headers ?? []) {
    if (name in header) return String(header[name]);
  }
  return undefined;
}

/** A topic name no broker has (nor will create: the test brokers do not create topics on use). */
export function missingTopic(): string {
  return uniqueName('no-such-topic').replaceAll('_', '-');
}
