import Kafka from '@confluentinc/kafka-javascript';
import type { DeliveryReport, LibrdKafkaError, MessageHeader } from '@confluentinc/kafka-javascript';
import { OutboxError } from '../errors.js';
import {
  checkProducerOverrides,
  clientProperties,
  PRODUCER_PRESETS,
  SAFE_PRODUCER_PROPERTIES,
  type KafkaConnection,
  type KafkaProperties,
  type ProducerPreset,
} from './config.js';
import { wrapKafkaError } from './errors.js';

export interface TransactionalProducerOptions {
  connection: KafkaConnection;
  transactionalId: string;
  preset?: ProducerPreset;
  /** Extra librdkafka producer properties; safety settings cannot be overridden. */
  properties?: KafkaProperties;
  /** transaction.timeout.ms: the broker aborts a transaction left open this long. Default 60 s. */
  transactionTimeoutMs?: number;
}

export interface ProduceRecord {
  topic: string;
  partition?: number;
  key: string | null;
  value: Buffer | null;
  headers: MessageHeader[];
}

export interface Delivered {
  topic: string;
  partition: number;
  offset: number;
}

type Pending = { resolve: (d: Delivered) => void; reject: (e: unknown) => void };

/**
 * librdkafka's low-level transactional producer behind promises.
 *
 * The low-level API is used on purpose instead of the KafkaJS-compatible one: its errors
 * carry `isFatal` / `isRetriable` / `isTxnRequiresAbort` (the compatible API never sets
 * them), and init/commit/abort take our timeouts instead of a fixed 5 s. Sends are not
 * awaited one by one: every `produce` returns a promise settled by the delivery report, so
 * a batch is in flight at once and librdkafka batches it.
 */
export class TransactionalProducer {
  private readonly producer: Kafka.Producer;
  private readonly pending = new Map<number, Pending>();
  private nextOpaque = 0;

  constructor(options: TransactionalProducerOptions) {
    checkProducerOverrides(options.properties);
    const transactionTimeoutMs = options.transactionTimeoutMs ?? 60_000;
    const base = clientProperties(options.connection);
    const config = {
      ...base,
      // librdkafka requires socket.timeout.ms <= transaction.timeout.ms + 100 (a user's own
      // setting is left for librdkafka to judge).
      'socket.timeout.ms': options.connection.properties?.['socket.timeout.ms'] ?? Math.min(Number(base['socket.timeout.ms']), transactionTimeoutMs),
      ...PRODUCER_PRESETS[options.preset ?? 'reliable'],
      // librdkafka requires delivery.timeout.ms <= transaction.timeout.ms.
      'delivery.timeout.ms': transactionTimeoutMs,
      'request.timeout.ms': 30_000,
      'transaction.timeout.ms': transactionTimeoutMs,
      ...options.properties,
      ...SAFE_PRODUCER_PROPERTIES,
      'transactional.id': options.transactionalId,
      dr_cb: true,
    };
    this.producer = new Kafka.Producer(config as never);
    this.producer.on('delivery-report', (err, report) => this.onDelivery(err, report));
  }

  private onDelivery(err: LibrdKafkaError | null | undefined, report: DeliveryReport): void {
    const opaque = report.opaque as number;
    const waiter = this.pending.get(opaque);
    if (!waiter) return;
    this.pending.delete(opaque);
    if (err) waiter.reject(err);
    else waiter.resolve({ topic: report.topic, partition: report.partition, offset: Number(report.offset) });
  }

  connect(timeoutMs = 30_000): Promise<void> {
    return new Promise((resolve, reject) => {
      this.producer.connect({ timeout: timeoutMs }, (err) => {
        if (err) return reject(wrapKafkaError('connect producer', err));
        this.producer.setPollInBackground(true);
        resolve();
      });
    });
  }

  private op(name: string, run: (cb: (err: LibrdKafkaError) => void) => void): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      run((err) => (err ? reject(err) : resolve()));
    }).catch((err: unknown) => {
      throw wrapKafkaError(name, err);
    });
  }

  /** Registers the transactional.id: fences older producers and completes their open transaction. */
  init(timeoutMs: number): Promise<void> {
    return this.op('init transactions', (cb) => this.producer.initTransactions(timeoutMs, cb));
  }

  begin(): Promise<void> {
    return this.op('begin transaction', (cb) => this.producer.beginTransaction(cb));
  }

  commit(timeoutMs: number): Promise<void> {
    return this.op('commit transaction', (cb) => this.producer.commitTransaction(timeoutMs, cb));
  }

  abort(timeoutMs: number): Promise<void> {
    return this.op('abort transaction', (cb) => this.producer.abortTransaction(timeoutMs, cb));
  }

  /**
   * Queues one record; the promise settles with its delivery report. A record librdkafka
   * refuses at once (too large, queue full, unknown partition) rejects immediately.
   */
  produce(record: ProduceRecord): Promise<Delivered> {
    const opaque = this.nextOpaque++;
    return new Promise<Delivered>((resolve, reject) => {
      this.pending.set(opaque, { resolve, reject });
      try {
        this.producer.produce(record.topic, record.partition ?? -1, record.value, record.key, Date.now(), opaque, record.headers);
      } catch (err) {
        this.pending.delete(opaque);
        reject(err);
      }
    }).catch((err: unknown) => {
      throw wrapKafkaError(`produce to ${record.topic}`, err);
    });
  }

  /** Fails every delivery promise still waiting (used when a transaction is abandoned). */
  failPending(reason: string): void {
    for (const [opaque, waiter] of this.pending) {
      this.pending.delete(opaque);
      waiter.reject(new OutboxError('KAFKA_ERROR', reason));
    }
  }

  disconnect(timeoutMs = 10_000): Promise<void> {
    this.failPending('producer disconnected');
    return new Promise((resolve) => {
      if (!this.producer.isConnected()) return resolve();
      this.producer.disconnect(timeoutMs, () => resolve());
    });
  }
}
