import type { MessageHeader } from '@confluentinc/kafka-javascript';
import type { KafkaConnection } from '../../src/kafka/config.js';
import { TransactionalProducer } from '../../src/kafka/producer.js';
import { uniqueName } from './wait.js';

export interface TestRecord {
  key: string | null;
  value: string;
  partition?: number;
  headers?: Record<string, string>;
}

/**
 * A transactional producer for tests: `send` writes records in one Kafka transaction (as
 * the relay does), so consumers see commit markers between batches like in production.
 */
export class TestProducer {
  private constructor(private readonly producer: TransactionalProducer) {}

  static async connect(connection: KafkaConnection): Promise<TestProducer> {
    const producer = new TransactionalProducer({ connection, transactionalId: uniqueName('test-producer'), preset: 'low-latency' });
    await producer.connect();
    await producer.init(30_000);
    return new TestProducer(producer);
  }

  async send(topic: string, records: TestRecord[]): Promise<{ partition: number; offset: number }[]> {
    await this.producer.begin();
    const delivered = await Promise.all(
      records.map((r) => {
        const headers: MessageHeader[] = Object.entries(r.headers ?? {}).map(([name, value]) => ({ [name]: Buffer.from(value) }));
        return this.producer.produce({ topic, partition: r.partition, key: r.key, value: Buffer.from(r.value), headers });
      }),
    );
    await this.producer.commit(30_000);
    return delivered.map((d) => ({ partition: d.partition, offset: d.offset }));
  }

  close(): Promise<void> {
    return this.producer.disconnect();
  }
}
