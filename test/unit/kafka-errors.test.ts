import Kafka from '@confluentinc/kafka-javascript';
import { describe, expect, it } from 'vitest';
import { OutboxError } from '../../src/errors.js';
import { classifyKafkaError, isRecordTooLarge, wrapKafkaError } from '../../src/kafka/errors.js';

const E = Kafka.CODES.ERRORS;
const kafkaError = (code: number, extra: Record<string, unknown> = {}) => ({ message: `error ${code}`, code, ...extra });

describe('Kafka error classification', () => {
  const MEANING = {
    row: 'belongs to the row: it is set aside, other keys flow',
    fatal: 'makes the producer unusable: it is rebuilt and the shard reconciled',
  } as const;
  const cases = [
    ['a record too large', E.ERR_MSG_SIZE_TOO_LARGE, 'row'],
    ['an unknown topic', E.ERR__UNKNOWN_TOPIC, 'row'],
    ['a topic the relay may not write', E.ERR_TOPIC_AUTHORIZATION_FAILED, 'row'],
    ['a policy violation', E.ERR_POLICY_VIOLATION, 'row'],
    ['a fenced producer', E.ERR_PRODUCER_FENCED, 'fatal'],
    ['an invalid producer epoch', E.ERR_INVALID_PRODUCER_EPOCH, 'fatal'],
    ['a local fence', E.ERR__FENCED, 'fatal'],
    ['an out-of-order sequence', E.ERR_OUT_OF_ORDER_SEQUENCE_NUMBER, 'fatal'],
    ['a destroyed client', E.ERR__DESTROY, 'fatal'],
  ] as const;
  for (const [what, code, kind] of cases) {
    it(`${what} ${MEANING[kind]}`, () => {
      expect(classifyKafkaError(kafkaError(code))).toBe(kind);
    });
  }

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
