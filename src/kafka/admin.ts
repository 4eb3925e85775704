import Kafka from '@confluentinc/kafka-javascript';
import type { IAdminClient, ListOffsetsResult, NewTopic, TopicDescription, TopicPartitionOffsetSpec } from '@confluentinc/kafka-javascript';
import { clientProperties, type KafkaConnection } from './config.js';
import { OutboxError } from '../errors.js';
import { isKafkaError, KAFKA_CODES, wrapKafkaError } from './errors.js';

const DEFAULT_TIMEOUT_MS = 15_000;
/** How long past its own timeout a request may stay unanswered before it is given up (see `call`). */
const ANSWER_GRACE_MS = 1_000;

/** One native admin client and the queue of requests for it. */
interface AdminHandle {
  client: IAdminClient;
  /** The last queued request: the next one runs after it. */
  tail: Promise<void>;
  /** Requests queued or running. */
  pending: number;
  retired: boolean;
  disconnected?: boolean;
}

/**
 * Promise wrapper around librdkafka's admin client: only the calls outbox-relay needs.
 *
 * After a failed call the underlying client is replaced on next use: a broker restart can
 * leave an admin client with metadata it never refreshes (e.g. a stale leader epoch, so
 * every ListOffsets fails), and a long-running relay must recover from that by itself.
 *
 * The native client runs one request at a time: each holds the client's lock on a
 * threadpool thread for as long as it waits for its answer, and `disconnect()` takes the
 * same lock on the calling (main) thread. So requests here are queued per client in
 * JavaScript (one threadpool thread per client at most), a request's timeout counts from
 * when it is asked, not from when its turn comes, and a client is disconnected only once it
 * has no request running: a disconnect never freezes the event loop behind a slow answer.
 */
export class KafkaAdmin {
  private current: AdminHandle | undefined;

  constructor(private readonly connection: KafkaConnection) {}

  private handle(): AdminHandle {
    this.current ??= {
      client: Kafka.AdminClient.create(clientProperties(this.connection)),
      tail: Promise.resolve(),
      pending: 0,
      retired: false,
    };
    return this.current;
  }

  /**
   * Runs one admin request, settled within `timeoutMs` plus {@link ANSWER_GRACE_MS} of the
   * call at the latest, however long it waits behind others or for its answer. A request
   * that fails or is given up retires its client (see {@link retire}). `check` turns a
   * result that carries errors (per-partition ones) into a failure.
   */
  private call<T>(
    operation: string,
    timeoutMs: number,
    run: (client: IAdminClient, cb: (err: unknown, value: T) => void) => void,
    check?: (value: T) => Error | undefined,
  ): Promise<T> {
    const handle = this.handle();
    handle.pending += 1;
    return new Promise<T>((resolve, reject) => {
      let settled = false;
      const settle = (err: unknown, value?: T) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        if (err) reject(err);
        else resolve(value as T);
      };
      const timer = setTimeout(() => {
        this.retire(handle);
        const waited = timeoutMs + ANSWER_GRACE_MS;
        settle(new OutboxError('KAFKA_ERROR', `${operation} failed: no answer within ${waited} ms`, { retriable: true }));
      }, timeoutMs + ANSWER_GRACE_MS);
      const turn = () =>
        new Promise<void>((done) => {
          const finish = (err: unknown, value?: T, answered = true) => {
            handle.pending -= 1;
            const error = err ? wrapKafkaError(operation, err) : answered ? check?.(value as T) : undefined;
            if (error) this.retire(handle);
            settle(error, value);
            this.disconnectIfIdle(handle);
            done();
          };
          // Given up while it waited for its turn: never sent.
          if (settled) return finish(undefined, undefined, false);
          try {
            run(handle.client, (err, value) => finish(err, value));
          } catch (err) {
            finish(err);
          }
        });
      handle.tail = handle.tail.then(turn);
    });
  }

  /** New calls get a new client; this one is disconnected once nothing runs on it. */
  private retire(handle: AdminHandle): void {
    if (this.current === handle) this.current = undefined;
    handle.retired = true;
    this.disconnectIfIdle(handle);
  }

  private disconnectIfIdle(handle: AdminHandle): void {
    if (!handle.retired || handle.pending > 0 || handle.disconnected) return;
    handle.disconnected = true;
    handle.client.disconnect();
  }

  /** Creates a topic; resolves `false` if it exists already. */
  async createTopic(topic: NewTopic, timeoutMs = DEFAULT_TIMEOUT_MS): Promise<boolean> {
    try {
      await this.call<void>(`create topic ${topic.topic}`, timeoutMs, (client, cb) => client.createTopic(topic, timeoutMs, cb));
      return true;
    } catch (err) {
      const cause = (err as Error).cause;
      if (isKafkaError(cause) && cause.code === KAFKA_CODES.ERRORS.ERR_TOPIC_ALREADY_EXISTS) return false;
      throw err;
    }
  }

  deleteTopic(topic: string, timeoutMs = DEFAULT_TIMEOUT_MS): Promise<void> {
    return this.call(`delete topic ${topic}`, timeoutMs, (client, cb) => client.deleteTopic(topic, timeoutMs, cb));
  }

  listTopics(timeoutMs = DEFAULT_TIMEOUT_MS): Promise<string[]> {
    return this.call('list topics', timeoutMs, (client, cb) => client.listTopics({ timeout: timeoutMs }, cb));
  }

  /** Describes topics; a missing topic comes back with `error` set, not as a rejection. */
  describeTopics(topics: string[], timeoutMs = DEFAULT_TIMEOUT_MS): Promise<TopicDescription[]> {
    return this.call('describe topics', timeoutMs, (client, cb) => client.describeTopics(topics, { timeout: timeoutMs }, cb));
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

  private listOffsets(
    partitions: Parameters<IAdminClient['listOffsets']>[0],
    options: { committed?: boolean; timeoutMs?: number },
  ): Promise<ListOffsetsResult[]> {
    const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    const isolationLevel = options.committed ? Kafka.IsolationLevel.READ_COMMITTED : Kafka.IsolationLevel.READ_UNCOMMITTED;
    return this.call<ListOffsetsResult[]>(
      'list offsets',
      timeoutMs,
      (client, cb) => client.listOffsets(partitions, { timeout: timeoutMs, isolationLevel }, cb),
      (result) => listOffsetsProblem(partitions, result),
    );
  }

  /** Retires the client: disconnected now, or once the request running on it has its answer. */
  close(): void {
    if (this.current) this.retire(this.current);
  }
}

/**
 * Why a ListOffsets answer cannot be used, if it cannot: a partition's own error, a
 * partition asked for and missing from the answer, or a negative offset for the log's start
 * or end. The native client has been seen to answer a request that ran out of time as a
 * success, without the partitions: taken as an end of 0, that would let a reconcile stop
 * before checkpoints it must apply. (For a time, -1 is a real answer: no record at or after it.)
 */
export function listOffsetsProblem(asked: TopicPartitionOffsetSpec[], result: ListOffsetsResult[]): Error | undefined {
  const failed = result.find((r) => r.error);
  if (failed) return wrapKafkaError(`list offsets of ${failed.topic}[${failed.partition}]`, failed.error);
  for (const a of asked) {
    const answer = result.find((r) => r.topic === a.topic && r.partition === a.partition);
    const where = `${a.topic}[${a.partition}]`;
    if (!answer) return new OutboxError('KAFKA_ERROR', `list offsets answered nothing for ${where}`, { retriable: true });
    const boundary = a.offset === Kafka.OffsetSpec.LATEST ? 'end' : a.offset === Kafka.OffsetSpec.EARLIEST ? 'start' : undefined;
    if (boundary && !(Number.isInteger(answer.offset) && answer.offset >= 0)) {
      return new OutboxError('KAFKA_ERROR', `list offsets answered offset ${String(answer.offset)} for the ${boundary} of ${where}`, { retriable: true });
    }
  }
  return undefined;
}
