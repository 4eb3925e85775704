import Kafka, { type Message } from '@confluentinc/kafka-javascript';
import { clientProperties, type KafkaConnection, type KafkaProperties } from './config.js';
import { wrapKafkaError } from './errors.js';

/**
 * A read_committed reader of assigned partitions, outside any consumer group's assignment
 * (its `group.id` only names it): records of aborted transactions are skipped, and it does
 * not pass a transaction still open. For short reads of known ranges: the relay's
 * checkpoints, the lag probe. `partition.eof` events are on, so a reader learns that it
 * reached a partition's end.
 */
export class CommittedReader {
  private constructor(
    private readonly consumer: Kafka.KafkaConsumer,
    private readonly what: string,
  ) {}

  /** Connects a reader named `name` (its client `group.id`); `properties` tune its fetches. */
  static async open(connection: KafkaConnection, name: string, what: string, timeoutMs: number, properties: KafkaProperties = {}): Promise<CommittedReader> {
    const consumer = new Kafka.KafkaConsumer(
      {
        ...clientProperties(connection),
        'group.id': name,
        'enable.auto.commit': false,
        'enable.auto.offset.store': false,
        'isolation.level': 'read_committed',
        'enable.partition.eof': true,
        ...properties,
      } as never,
      // An offset below the log start (records deleted) reads on from the log start.
      { 'auto.offset.reset': 'earliest' },
    );
    await new Promise<void>((resolve, reject) => consumer.connect({ timeout: timeoutMs }, (err) => (err ? reject(wrapKafkaError(`connect ${what}`, err)) : resolve())));
    return new CommittedReader(consumer, what);
  }

  /** Reads each partition from its offset; `consumeTimeoutMs` is how long one fetch waits for records. */
  assign(partitions: Array<{ topic: string; partition: number; offset: number }>, consumeTimeoutMs: number): void {
    this.consumer.setDefaultConsumeTimeout(consumeTimeoutMs);
    this.consumer.assign(partitions);
  }

  /** Called when a partition's end is reached, with the end offset. */
  onEnd(listener: (end: { topic: string; partition: number; offset: number }) => void): void {
    this.consumer.on('partition.eof', listener);
  }

  /** Up to `max` records. */
  consume(max: number): Promise<Message[]> {
    return new Promise((resolve, reject) => this.consumer.consume(max, (err, messages) => (err ? reject(wrapKafkaError(this.what, err)) : resolve(messages))));
  }

  /** The fetcher's position in a partition (it may run ahead of the records handed over). */
  position(topic: string, partition: number): number | undefined {
    return this.consumer.position([{ topic, partition }])[0]?.offset;
  }

  /** Fetches no more of a partition. */
  pause(topic: string, partition: number): void {
    this.consumer.pause([{ topic, partition }]);
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.consumer.disconnect(() => resolve()));
  }
}
