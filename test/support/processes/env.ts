// What the consumer processes of the tests share: their settings come from the environment.
import type { ConsumerOptions } from '../../../src/consumer/index.js';
import { FAST_GROUP } from './timings.js';

export function requiredEnv(name: string): string {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is required`);
  return value;
}

/** Connection, group, topic and schema from TEST_* variables, with the tests' fast group timings. */
export function consumerFromEnv(): Pick<ConsumerOptions, 'databaseUrl' | 'brokers' | 'groupId' | 'topics' | 'schema'> & typeof FAST_GROUP {
  return {
    databaseUrl: requiredEnv('DATABASE_URL'),
    brokers: requiredEnv('KAFKA_BROKERS'),
    groupId: requiredEnv('TEST_GROUP'),
    topics: [requiredEnv('TEST_TOPIC')],
    schema: requiredEnv('TEST_SCHEMA'),
    ...FAST_GROUP,
  };
}
