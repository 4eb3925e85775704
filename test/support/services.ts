import type pg from 'pg';
import { afterAll } from 'vitest';
import type { Consumer } from '../../src/consumer/index.js';
import { KafkaAdmin } from '../../src/kafka/admin.js';
import type { KafkaConnection } from '../../src/kafka/config.js';
import { createEffectsTable, testConsumer } from './consumer.js';
import { freshSchema, testPool } from './db.js';
import { freshTopic, kafkaConnection } from './kafka.js';
import { TestProducer } from './produce.js';

export interface TestServices {
  connection: KafkaConnection;
  pool: pg.Pool;
  admin: KafkaAdmin;
  /** Connects on first use. */
  producer: TestProducer;
  /** Consumers a test started; stopped when the file ends. */
  consumers: Consumer[];
  /** A fresh migrated outbox schema, and a fresh topic of `partitions` (default 3). */
  freshOutbox(partitions?: number): Promise<{ schema: string; topic: string }>;
  /** A fresh schema with the effects table (see createEffectsTable), and a fresh topic of `partitions` (default 3). */
  freshEffects(partitions?: number): Promise<{ schema: string; topic: string }>;
  /** A test consumer (see testConsumer), started, and stopped when the file ends. */
  startConsumer(options: Parameters<typeof testConsumer>[0]): Promise<Consumer>;
}

/**
 * What most test files need, opened for the file and closed after it: a pool, an admin
 * client, a transactional test producer and the consumers the tests start.
 */
export function useTestServices(options: { poolSize?: number } = {}): TestServices {
  const connection = kafkaConnection();
  const services: TestServices = {
    connection,
    pool: testPool(options.poolSize ?? 5),
    admin: new KafkaAdmin(connection),
    producer: TestProducer.lazy(connection),
    consumers: [],
    async freshOutbox(partitions = 3) {
      return { schema: await freshSchema(services.pool), topic: await freshTopic(services.admin, partitions) };
    },
    async freshEffects(partitions = 3) {
      const schema = await freshSchema(services.pool);
      await createEffectsTable(services.pool, schema);
      return { schema, topic: await freshTopic(services.admin, partitions) };
    },
    async startConsumer(options) {
      const consumer = testConsumer(options);
      services.consumers.push(consumer);
      await consumer.start();
      return consumer;
    },
  };
  afterAll(async () => {
    await Promise.all(services.consumers.map((c) => c.stop()));
    await services.producer.close();
    services.admin.close();
    await services.pool.end();
  });
  return services;
}
