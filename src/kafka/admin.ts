import Kafka from '@confluentinc/kafka-javascript';
import type { IAdminClient, ListOffsetsResult, NewTopic, TopicDescription } from '@confluentinc/kafka-javascript';
import { clientProperties, type KafkaConnection } from './config.js';
import { isKafkaError, KAFKA_CODES, wrapKafkaError } from './errors.js';

const DEFAULT_TIMEOUT_MS = 15_000;

/**
 * Promise wrapper around librdkafka's admin client: only the calls outbox-relay needs.
 *
 * After a failed call the underlying client is replaced on next use: a broker restart can
 * leave an admin client with metadata it never refreshes (e.g. a stale leader epoch, so
 * every ListOffsets fails), and a long-running relay must recover from that by itself.
 */
export class KafkaAdmin {
  private current: IAdminClient | undefined;

  constructor(private readonly connection: KafkaConnection) {}

  private get client(): IAdminClient {
    this.current ??= Kafka.AdminClient.create(clientProperties(this.connection) as never);
    return this.current;
  }

  private call<T>(operation: string, run: (cb: (err: unknown, value: T) => void) => void): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      run((err, value) => (err ? reject(wrapKafkaError(operation, err)) : resolve(value)));
    }).catch((err: unknown) => {
      this.close();
      throw err;
    });
  }

  /** Creates a topic; resolves `false` if it exists already. */
  async createTopic(topic: NewTopic, timeoutMs = DEFAULT_TIMEOUT_MS): Promise<boolean> {
    try {
      await this.call<void>(`create topic ${topic.topic}`, (cb) => this.client.createTopic(topic, timeoutMs, cb));
      return true;
    } catch (err) {
      const cause = (err as Error).cause;
      if (isKafkaError(cause) && cause.code === KAFKA_CODES.ERRORS.ERR_TOPIC_ALREADY_EXISTS) return false;
      throw err;
    }
  }

  deleteTopic(topic: string, timeoutMs = DEFAULT_TIMEOUT_MS): Promise<void> {
    return this.call(`delete topic ${topic}`, (cb) => this.client.deleteTopic(topic, timeoutMs, cb));
  }

  listTopics(timeoutMs = DEFAULT_TIMEOUT_MS): Promise<string[]> {
    return this.call('list topics', (cb) => this.client.listTopics({ timeout: timeoutMs }, cb));
  }

  /** Describes topics; a missing topic comes back with `error` set, not as a rejection. */
  describeTopics(topics: string[], timeoutMs = DEFAULT_TIMEOUT_MS): Promise<TopicDescription[]> {
    return this.call('describe topics', (cb) => this.client.describeTopics(topics, { timeout: timeoutMs }, cb));
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

  /** Log start offsets (the earliest record still kept) of the given partitions. */
  async startOffsets(topic: string, partitions: number[], timeoutMs = DEFAULT_TIMEOUT_MS): Promise<Map<number, number>> {
    const result = await this.listOffsets(
      partitions.map((partition) => ({ topic, partition, offset: Kafka.OffsetSpec.EARLIEST })),
      { timeoutMs },
    );
    return new Map(result.map((r) => [r.partition, r.offset]));
  }

  /**
   * Topic ids (base64, as Kafka's tools print them) of existing topics. A topic deleted and
   * recreated under the same name has a new id. Missing topics, and brokers that report no
   * id (all zeros), are left out.
   */
  async topicIds(topics: string[], timeoutMs = DEFAULT_TIMEOUT_MS): Promise<Map<string, string>> {
    const described = await this.describeTopics(topics, timeoutMs);
    const ids = new Map<string, string>();
    for (const d of described) {
      const id = (d.topicId as { base64?: string; base64str?: string } | undefined) ?? undefined;
      const text = id?.base64 ?? id?.base64str;
      if (!d.error && text && !/^A+=*$/.test(text)) ids.set(d.name, text);
    }
    return ids;
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
    const result = await this.call<ListOffsetsResult[]>('list offsets', (cb) =>
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
    if (failed) {
      this.close();
      throw wrapKafkaError(`list offsets of ${failed.topic}[${failed.partition}]`, failed.error);
    }
    return result;
  }

  close(): void {
    const client = this.current;
    this.current = undefined;
    client?.disconnect();
  }
}
