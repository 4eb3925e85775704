import type pg from 'pg';
import { afterAll } from 'vitest';
import type { Consumer } from '../../src/consumer/index.js';
import { KafkaAdmin } from '../../src/kafka/admin.js';
import type { KafkaConnection } from '../../src/kafka/config.js';
import { testPool } from './db.js';
import { kafkaConnection } from './kafka.js';
import { TestProducer } from './produce.js';

export interface TestServices {
  connection: KafkaConnection;
  pool: pg.Pool;
  admin: KafkaAdmin;
  /** Connects on first use. */
  producer: TestProducer;
  /** Consumers a test started; stopped when the file ends. */
  consumers: Consumer[];
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
  };
  afterAll(async () => {
    await Promise.all(services.consumers.map((c) => c.stop()));
    await services.producer.close();
    services.admin.close();
    await services.pool.end();
  });
  return services;
}
