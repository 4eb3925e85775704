import Kafka from '@confluentinc/kafka-javascript';
import type { IAdminClient, ListOffsetsResult, NewTopic, TopicDescription } from '@confluentinc/kafka-javascript';
import { clientProperties, type KafkaConnection } from './config.js';
import { isKafkaError, KAFKA_CODES, wrapKafkaError } from './errors.js';

const DEFAULT_TIMEOUT_MS = 15_000;

function call<T>(operation: string, run: (cb: (err: unknown, value: T) => void) => void): Promise<T> {
  return new Promise((resolve, reject) => {
    run((err, value) => (err ? reject(wrapKafkaError(operation, err)) : resolve(value)));
  });
}

/** Promise wrapper around librdkafka's admin client: only the calls outbox-relay needs. */
export class KafkaAdmin {
  private readonly client: IAdminClient;

  constructor(connection: KafkaConnection) {
    this.client = Kafka.AdminClient.create(clientProperties(connection) as never);
  }

  /** Creates a topic; resolves `false` if it exists already. */
  async createTopic(topic: NewTopic, timeoutMs = DEFAULT_TIMEOUT_MS): Promise<boolean> {
    try {
      await call<void>(`create topic ${topic.topic}`, (cb) => this.client.createTopic(topic, timeoutMs, cb));
      return true;
    } catch (err) {
      const cause = (err as Error).cause;
      if (isKafkaError(cause) && cause.code === KAFKA_CODES.ERRORS.ERR_TOPIC_ALREADY_EXISTS) return false;
      throw err;
    }
  }

  deleteTopic(topic: string, timeoutMs = DEFAULT_TIMEOUT_MS): Promise<void> {
    return call(`delete topic ${topic}`, (cb) => this.client.deleteTopic(topic, timeoutMs, cb));
  }

  listTopics(timeoutMs = DEFAULT_TIMEOUT_MS): Promise<string[]> {
    return call('list topics', (cb) => this.client.listTopics({ timeout: timeoutMs }, cb));
  }

  /** Describes topics; a missing topic comes back with `error` set, not as a rejection. */
  describeTopics(topics: string[], timeoutMs = DEFAULT_TIMEOUT_MS): Promise<TopicDescription[]> {
    return call('describe topics', (cb) => this.client.describeTopics(topics, { timeout: timeoutMs }, cb));
  }

  /**
   * End offsets of every partition of a topic. `committed: true` gives the last stable
   * offset (what a read_committed consumer can reach); otherwise the high watermark.
   */
  async endOffsets(topic: string, partitions: number[], options: { committed?: boolean; timeoutMs?: number } = {}): Promise<Map<number, number>> {
    const result = await this.listOffsets(
      partitions.map((partition) => ({ topic, partition, offset: Kafka.OffsetSpec.LATEST })),
      options,
    );
    return new Map(result.map((r) => [r.partition, r.offset]));
  }

  /** Offsets for a timestamp per partition: the first offset at or after `timestampMs`, or the end. */
  async offsetsForTime(topic: string, partitions: number[], timestampMs: number, timeoutMs = DEFAULT_TIMEOUT_MS): Promise<Map<number, number>> {
    const result = await this.listOffsets(
      partitions.map((partition) => ({ topic, partition, offset: new Kafka.OffsetSpec(timestampMs) })),
      { committed: true, timeoutMs },
    );
    const ends = await this.endOffsets(topic, partitions, { committed: true, timeoutMs });
    return new Map(result.map((r) => [r.partition, r.offset >= 0 ? r.offset : (ends.get(r.partition) ?? 0)]));
  }

  private async listOffsets(
    partitions: Parameters<IAdminClient['listOffsets']>[0],
    options: { committed?: boolean; timeoutMs?: number },
  ): Promise<ListOffsetsResult[]> {
    const result = await call<ListOffsetsResult[]>('list offsets', (cb) =>
      this.client.listOffsets(
        partitions,
        {
          timeout: options.timeoutMs ?? DEFAULT_TIMEOUT_MS,
          isolationLevel: options.committed ? Kafka.IsolationLevel.READ_COMMITTED : Kafka.IsolationLevel.READ_UNCOMMITTED,
        },
        cb,
      ),
    );
    const failed = result.find((r) => r.error);
    if (failed) throw wrapKafkaError(`list offsets of ${failed.topic}[${failed.partition}]`, failed.error);
    return result;
  }

  close(): void {
    this.client.disconnect();
  }
}
