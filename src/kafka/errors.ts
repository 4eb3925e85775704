import KafkaJs from '@confluentinc/kafka-javascript';
import { OutboxError } from '../errors.js';

const { CODES } = KafkaJs;
const E = CODES.ERRORS;

/** The shape of errors from librdkafka callbacks (LibrdKafkaError). */
export interface KafkaErrorLike {
  message: string;
  code: number;
  isFatal?: boolean;
  isRetriable?: boolean;
  isTxnRequiresAbort?: boolean;
}

export function isKafkaError(err: unknown): err is KafkaErrorLike {
  return typeof err === 'object' && err !== null && typeof (err as KafkaErrorLike).code === 'number' && 'message' in err;
}

/**
 * What the relay does about a Kafka error.
 * - `transient`: abort, back off, retry the same rows.
 * - `row`: this record can never be written as it is (too large, bad topic, not allowed):
 *   isolate the row, record the error on it, let other keys flow.
 * - `fatal`: the producer is unusable (fenced, fatal): give up the shard, rebuild, reconcile.
 */
export type KafkaFailureKind = 'transient' | 'row' | 'fatal';

/** Errors that belong to one record rather than to the producer or the cluster. */
const ROW_CODES = new Set<number>([
  E.ERR_MSG_SIZE_TOO_LARGE,
  E.ERR_INVALID_MSG_SIZE,
  E.ERR_RECORD_LIST_TOO_LARGE,
  E.ERR_UNKNOWN_TOPIC_OR_PART,
  E.ERR__UNKNOWN_TOPIC,
  E.ERR__UNKNOWN_PARTITION,
  E.ERR_TOPIC_EXCEPTION,
  E.ERR_TOPIC_AUTHORIZATION_FAILED,
  E.ERR_INVALID_RECORD,
  E.ERR_INVALID_MSG,
  E.ERR_POLICY_VIOLATION,
  E.ERR_INVALID_TIMESTAMP,
]);

/** Errors after which this producer instance must not be used again. */
const FATAL_CODES = new Set<number>([
  E.ERR__FATAL,
  E.ERR__FENCED,
  E.ERR_PRODUCER_FENCED,
  E.ERR_INVALID_PRODUCER_EPOCH,
  E.ERR_TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
  E.ERR_INVALID_PRODUCER_ID_MAPPING,
  E.ERR_CLUSTER_AUTHORIZATION_FAILED,
  E.ERR_UNKNOWN_PRODUCER_ID,
  E.ERR_OUT_OF_ORDER_SEQUENCE_NUMBER,
  E.ERR__DESTROY,
]);

/**
 * Classifies by numeric error code (and librdkafka's own `isFatal`, which only the
 * low-level client sets). Anything not known to be row-specific or fatal is transient:
 * retrying the same rows is always safe for a transactional producer.
 */
export function classifyKafkaError(err: unknown): KafkaFailureKind {
  if (err instanceof OutboxError && err.code === 'KAFKA_ERROR' && err.cause !== undefined) return classifyKafkaError(err.cause);
  if (!isKafkaError(err)) return 'transient';
  if (err.isFatal || FATAL_CODES.has(err.code)) return 'fatal';
  if (ROW_CODES.has(err.code)) return 'row';
  return 'transient';
}

/** The broker or producer refused a record (or the batch holding it) for its size. */
export function isRecordTooLarge(err: unknown): boolean {
  if (err instanceof OutboxError && err.cause !== undefined) return isRecordTooLarge(err.cause);
  return isKafkaError(err) && [E.ERR_MSG_SIZE_TOO_LARGE, E.ERR_RECORD_LIST_TOO_LARGE, E.ERR_INVALID_MSG_SIZE].includes(err.code);
}

/** Wraps a librdkafka error in an OutboxError, keeping the code visible in the message. */
export function wrapKafkaError(operation: string, err: unknown): OutboxError {
  const code = isKafkaError(err) ? ` (code ${err.code})` : '';
  const message = err instanceof Error || isKafkaError(err) ? (err as { message: string }).message : String(err);
  return new OutboxError('KAFKA_ERROR', `${operation} failed: ${message}${code}`, {
    cause: err,
    retriable: classifyKafkaError(err) === 'transient',
  });
}

export { CODES as KAFKA_CODES };
