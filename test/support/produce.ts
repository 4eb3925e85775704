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
  private readonly producer: TransactionalProducer;
  private ready: Promise<void> | undefined;

  private constructor(connection: KafkaConnection) {
    this.producer = new TransactionalProducer({ connection, transactionalId: uniqueName('test-producer'), preset: 'low-latency' });
  }

  /** A producer that connects on its first `send`. */
  static lazy(connection: KafkaConnection): TestProducer {
    return new TestProducer(connection);
  }

  static async connect(connection: KafkaConnection): Promise<TestProducer> {
    const producer = new TestProducer(connection);
    await producer.connected();
    return producer;
  }

  private connected(): Promise<void> {
    this.ready ??= this.producer.connect().then(() => this.producer.init(30_000));
    return this.ready;
  }

  async send(topic: string, records: TestRecord[]): Promise<{ partition: number; offset: number }[]> {
    await this.connected();
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
