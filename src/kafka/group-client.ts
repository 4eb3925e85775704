import Kafka from '@confluentinc/kafka-javascript';
import type { Assignment, LibrdKafkaError, Message, TopicPartition, TopicPartitionOffset } from '@confluentinc/kafka-javascript';
import { clientProperties, type KafkaConnection, type KafkaProperties } from './config.js';
import { wrapKafkaError } from './errors.js';

/** librdkafka's logical offsets for `assign`. */
export const OFFSET_BEGINNING = -2;

export const REBALANCE_ASSIGN = Kafka.CODES.ERRORS.ERR__ASSIGN_PARTITIONS;

export type RebalanceListener = (code: number, partitions: TopicPartition[]) => void;

export interface GroupClientOptions {
  connection: KafkaConnection;
  groupId: string;
  fromBeginning: boolean;
  sessionTimeoutMs: number;
  heartbeatIntervalMs: number;
  maxPollIntervalMs: number;
  pollTimeoutMs: number;
  properties: KafkaProperties;
  onRebalance: RebalanceListener;
  onCommitError: (err: LibrdKafkaError) => void;
}

/**
 * The low-level librdkafka consumer behind promises, in a group with manual assignment.
 *
 * Why the low-level client and its `rebalance_cb`: librdkafka hands the assignment to the
 * application and waits until the application calls `assign()` — the binding returns from
 * the native callback at once and the JS callback may call `assign()` later. That lets the
 * consumer read the stored offsets from PostgreSQL first and assign WITH those offsets, so
 * nothing is fetched from a Kafka-committed position before the seek (there is no window to
 * close). The KafkaJS-compatible API offers the same through its own `rebalance_cb`
 * wrapper, but its fixed 5 s timeouts and unset error flags make it the weaker base.
 * The eager protocol (range, roundrobin) is used on purpose: every rebalance revokes
 * everything, so the consumer never has to reason about a partial assignment.
 */
export class GroupClient {
  private readonly consumer: Kafka.KafkaConsumer;

  constructor(private readonly options: GroupClientOptions) {
    const config = {
      ...clientProperties(options.connection),
      'session.timeout.ms': options.sessionTimeoutMs,
      'heartbeat.interval.ms': options.heartbeatIntervalMs,
      'max.poll.interval.ms': options.maxPollIntervalMs,
      // A subscribed topic deleted and created again: a member that saw it gone (and gave its
      // partitions up) learns of the new topic only at its next metadata refresh. librdkafka's
      // default is 5 minutes; 10 s bounds that pause at a metadata request per 10 s.
      'topic.metadata.refresh.interval.ms': 10_000,
      // Records fetched ahead of the application, at most (librdkafka's default is 64 MiB):
      // 16 MiB is still many polls' worth, and keeps the process small.
      'queued.max.messages.kbytes': 16_384,
      // At most 64 KiB of one partition per fetch (librdkafka's default is 1 MiB): a fetch
      // then holds slices of every partition of the broker, so records of all of them reach
      // the loop side by side (and their batches run in parallel). With 1 MiB, one
      // partition's backlog fills the queue first and the others wait for it to drain,
      // long enough to look stalled. A larger first record batch is still fetched whole.
      'max.partition.fetch.bytes': 65_536,
      ...options.properties,
      'group.id': options.groupId,
      'enable.auto.commit': false,
      'enable.auto.offset.store': false,
      'isolation.level': 'read_committed',
      // Used only when an assigned offset is out of range (retention deleted it, or the log
      // was truncated): go to the earliest record, never silently jump to the end. Where a
      // partition without a stored offset starts is decided at assignment (fromBeginning).
      'auto.offset.reset': 'earliest',
      'partition.assignment.strategy': 'range,roundrobin',
      rebalance_cb: (err: LibrdKafkaError | undefined, assignment: TopicPartition[]) => {
        options.onRebalance(err?.code ?? 0, assignment);
      },
      offset_commit_cb: (err: LibrdKafkaError | undefined) => {
        if (err && err.code !== Kafka.CODES.ERRORS.ERR__NO_OFFSET) options.onCommitError(err);
      },
    };
    this.consumer = new Kafka.KafkaConsumer(config as never, {});
    this.consumer.setDefaultConsumeTimeout(options.pollTimeoutMs);
    // Return what is there as soon as one record arrived instead of waiting out the timeout.
    (this.consumer as unknown as { setDefaultIsTimeoutOnlyForFirstMessage(v: boolean): void }).setDefaultIsTimeoutOnlyForFirstMessage(true);
    // Errors are reported through the promises; the 'error' event must have a listener.
    this.consumer.on('event.error', () => undefined);
  }

  connect(timeoutMs = 30_000): Promise<void> {
    return new Promise((resolve, reject) => {
      this.consumer.connect({ timeout: timeoutMs }, (err) => (err ? reject(wrapKafkaError('connect consumer', err)) : resolve()));
    });
  }

  subscribe(topics: readonly string[]): void {
    this.consumer.subscribe([...topics]);
  }

  /**
   * Up to `max` records; resolves early when records are there, or empty after the poll
   * timeout (`timeoutMs`, default the configured one; 0 returns what is buffered at once).
   */
  consume(max: number, timeoutMs = this.options.pollTimeoutMs): Promise<Message[]> {
    this.consumer.setDefaultConsumeTimeout(timeoutMs);
    return new Promise((resolve, reject) => {
      this.consumer.consume(max, (err, messages) => (err ? reject(wrapKafkaError('consume', err)) : resolve(messages ?? [])));
    });
  }

  assign(assignments: Assignment[]): void {
    this.consumer.assign(assignments);
  }

  unassign(): void {
    this.consumer.unassign();
  }

  /** Moves the fetch position; records fetched before are discarded by librdkafka. */
  seek(topic: string, partition: number, offset: number, timeoutMs = 10_000): Promise<void> {
    return new Promise((resolve, reject) => {
      this.consumer.seek({ topic, partition, offset }, timeoutMs, (err) =>
        err ? reject(wrapKafkaError(`seek ${topic}[${partition}] to ${offset}`, err)) : resolve(),
      );
    });
  }

  pause(partitions: TopicPartition[]): void {
    this.consumer.pause(partitions);
  }

  resume(partitions: TopicPartition[]): void {
    this.consumer.resume(partitions);
  }

  /** Fire-and-forget commit of next offsets to Kafka, for lag tools. Never throws. */
  commitAsync(offsets: TopicPartitionOffset[]): void {
    try {
      this.consumer.commit(offsets);
    } catch (err) {
      this.options.onCommitError(err as LibrdKafkaError);
    }
  }

  /** Current fetch positions of the given partitions (`undefined` when unknown). */
  positions(partitions: TopicPartition[]): Map<string, number> {
    const result = new Map<string, number>();
    try {
      for (const p of this.consumer.position(partitions)) {
        if (typeof p.offset === 'number' && p.offset >= 0) result.set(`${p.topic}:${p.partition}`, p.offset);
      }
    } catch {
      // Not assigned any more: nothing to report.
    }
    return result;
  }

  /** The partition's high watermark as last fetched (no broker round trip), when known. */
  highWatermark(topic: string, partition: number): number | undefined {
    try {
      const { highOffset } = (this.consumer as unknown as { getWatermarkOffsets(t: string, p: number): { highOffset: number } }).getWatermarkOffsets(topic, partition);
      return typeof highOffset === 'number' && highOffset >= 0 ? highOffset : undefined;
    } catch {
      return undefined;
    }
  }

  /** librdkafka considers the assignment lost (session timed out, poll interval exceeded): the group has moved on. */
  assignmentLost(): boolean {
    try {
      return (this.consumer as unknown as { assignmentLost(): boolean }).assignmentLost();
    } catch {
      return false;
    }
  }

  /** Leaves the group (the revocation is served by the rebalance listener) and closes. */
  disconnect(): Promise<void> {
    return new Promise((resolve) => {
      if (!this.consumer.isConnected()) return resolve();
      try {
        this.consumer.unsubscribe();
      } catch {
        // Already unsubscribed.
      }
      this.consumer.disconnect(() => resolve());
    });
  }
}
