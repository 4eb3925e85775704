import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KafkaAdmin } from '../../src/kafka/admin.js';
import { TransactionalProducer } from '../../src/kafka/producer.js';
import { freshTopic, kafkaConnection, readTopic } from '../support/kafka.js';
import { uniqueName } from '../support/wait.js';

describe('the real Kafka broker', () => {
  const connection = kafkaConnection();
  let admin: KafkaAdmin;

  beforeAll(() => {
    admin = new KafkaAdmin(connection);
  });
  afterAll(() => admin.close());

  async function transactionalProducer(): Promise<TransactionalProducer> {
    const producer = new TransactionalProducer({ connection, transactionalId: uniqueName('txn') });
    await producer.connect();
    await producer.init(30_000);
    return producer;
  }

  it('creates a topic, and a second create reports that it exists', async () => {
    const topic = await freshTopic(admin, 2);
    const [description] = await admin.describeTopics([topic]);
    expect(description?.partitions).toHaveLength(2);
    expect(await admin.createTopic({ topic, num_partitions: 2, replication_factor: 1 })).toBe(false);
  });

  it('a committed transaction is read back by a read_committed consumer; an aborted one is invisible', async () => {
    const topic = await freshTopic(admin, 3);
    const producer = await transactionalProducer();
    try {
      await producer.begin();
      const committed = await Promise.all(
        ['a', 'b', 'c'].map((key) => producer.produce({ topic, key, value: Buffer.from(`committed-${key}`), headers: [{ h: 'v' }] })),
      );
      await producer.commit(30_000);
      expect(committed.every((d) => d.offset >= 0)).toBe(true);

      await producer.begin();
      await Promise.all(['a', 'b'].map((key) => producer.produce({ topic, key, value: Buffer.from(`aborted-${key}`), headers: [] })));
      await producer.abort(30_000);

      const read = await readTopic(connection, topic, 3, { expected: 3 });
      expect(read.map((m) => m.value?.toString()).sort()).toEqual(['committed-a', 'committed-b', 'committed-c']);

      // The aborted records are in the log: a read_uncommitted reader sees all five.
      const dirty = await readTopic(connection, topic, 3, { expected: 5, isolation: 'read_uncommitted' });
      expect(dirty).toHaveLength(5);
    } finally {
      await producer.disconnect();
    }
  });

  it('a new producer with the same transactional.id fences the old one', async () => {
    const topic = await freshTopic(admin, 1);
    const transactionalId = uniqueName('fence');
    const old = new TransactionalProducer({ connection, transactionalId });
    await old.connect();
    await old.init(30_000);
    await old.begin();
    await old.produce({ topic, key: 'k', value: Buffer.from('zombie'), headers: [] });

    const fresh = new TransactionalProducer({ connection, transactionalId });
    await fresh.connect();
    await fresh.init(30_000); // aborts the old producer's open transaction
    await expect(old.commit(10_000)).rejects.toThrow();
    await fresh.begin();
    await fresh.produce({ topic, key: 'k', value: Buffer.from('owner'), headers: [] });
    await fresh.commit(30_000);

    const read = await readTopic(connection, topic, 1, { expected: 1 });
    expect(read.map((m) => m.value?.toString())).toEqual(['owner']);
    await Promise.all([old.disconnect(), fresh.disconnect()]);
  });
});
