import Kafka from '@confluentinc/kafka-javascript';
import { describe, expect, it } from 'vitest';
import { OutboxError } from '../../src/errors.js';
import { classifyKafkaError, isRecordTooLarge, wrapKafkaError } from '../../src/kafka/errors.js';

const E = Kafka.CODES.ERRORS;
const kafkaError = (code: number, extra: Record<string, unknown> = {}) => ({ message: `error ${code}`, code, ...extra });

describe('Kafka error classification', () => {
  it.each([
    ['a record too large', E.ERR_MSG_SIZE_TOO_LARGE],
    ['an unknown topic', E.ERR__UNKNOWN_TOPIC],
    ['a topic the relay may not write', E.ERR_TOPIC_AUTHORIZATION_FAILED],
    ['a policy violation', E.ERR_POLICY_VIOLATION],
  ])('%s belongs to the row: it is set aside, other keys flow', (_, code) => {
    expect(classifyKafkaError(kafkaError(code))).toBe('row');
  });

  it.each([
    ['a fenced producer', E.ERR_PRODUCER_FENCED],
    ['an invalid producer epoch', E.ERR_INVALID_PRODUCER_EPOCH],
    ['a local fence', E.ERR__FENCED],
    ['an out-of-order sequence', E.ERR_OUT_OF_ORDER_SEQUENCE_NUMBER],
    ['a destroyed client', E.ERR__DESTROY],
  ])('%s makes the producer unusable: it is rebuilt and the shard reconciled', (_, code) => {
    expect(classifyKafkaError(kafkaError(code))).toBe('fatal');
  });

  it("librdkafka's own fatal flag wins over the code", () => {
    expect(classifyKafkaError(kafkaError(E.ERR__TRANSPORT, { isFatal: true }))).toBe('fatal');
  });

  it.each([
    ['a transport failure', kafkaError(E.ERR__TRANSPORT)],
    ['a timeout', kafkaError(E.ERR__TIMED_OUT)],
    ['not enough replicas', kafkaError(E.ERR_NOT_ENOUGH_REPLICAS)],
    ['an error of unknown shape', new Error('boom')],
    ['a thrown string', 'boom'],
  ])('%s is transient: the same rows are retried', (_, err) => {
    expect(classifyKafkaError(err)).toBe('transient');
  });

  it('a wrapped error is classified by its cause, and keeps the code in its message', () => {
    const wrapped = wrapKafkaError('produce', kafkaError(E.ERR_PRODUCER_FENCED));
    expect(wrapped).toBeInstanceOf(OutboxError);
    expect(wrapped).toMatchObject({ code: 'KAFKA_ERROR', retriable: false });
    expect(wrapped.message).toBe(`produce failed: error ${E.ERR_PRODUCER_FENCED} (code ${E.ERR_PRODUCER_FENCED})`);
    expect(classifyKafkaError(wrapped)).toBe('fatal');
    expect(wrapKafkaError('produce', kafkaError(E.ERR__TRANSPORT)).retriable).toBe(true);
  });

  it('a record too large is recognised through its wrapper', () => {
    expect(isRecordTooLarge(wrapKafkaError('produce', kafkaError(E.ERR_RECORD_LIST_TOO_LARGE)))).toBe(true);
    expect(isRecordTooLarge(wrapKafkaError('produce', kafkaError(E.ERR__TRANSPORT)))).toBe(false);
  });
});
