import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KafkaAdmin } from '../../src/kafka/admin.js';
import { OwnBroker } from '../support/broker.js';
import { freshTopic, kafkaConnection } from '../support/kafka.js';
import { waitFor } from '../support/wait.js';

/** How long past its timeout a request may take to settle: the client's grace and a loaded machine's slack. */
const SLACK_MS = 2_500;

/** The longest the event loop went without running a timer while `run` ran. */
async function longestStall<T>(run: () => Promise<T>): Promise<{ value: T; stallMs: number }> {
  let last = Date.now();
  let stallMs = 0;
  const ticker = setInterval(() => {
    const now = Date.now();
    stallMs = Math.max(stallMs, now - last);
    last = now;
  }, 20);
  try {
    const value = await run();
    stallMs = Math.max(stallMs, Date.now() - last);
    return { value, stallMs };
  } finally {
    clearInterval(ticker);
  }
}

describe('admin requests against a broker that does not answer', () => {
  const broker = new OwnBroker(19792, 19793);
  let topic: string;

  beforeAll(async () => {
    await broker.start();
    const admin = new KafkaAdmin(kafkaConnection(broker.brokers));
    topic = await freshTopic(admin, 3);
    await waitFor(async () => (await admin.endOffsets(topic, [0, 1, 2], { timeoutMs: 3_000 })).size === 3, {
      timeoutMs: 60_000,
      message: 'the new topic has leaders',
    });
    admin.close();
  }, 180_000);

  afterAll(async () => {
    broker.resume();
    await broker.stop();
  }, 90_000);

  it('every request settles within its own timeout, however many were asked at once, and the client answers again once the broker does', { timeout: 120_000 }, async () => {
    const admin = new KafkaAdmin(kafkaConnection(broker.brokers));
    try {
      await waitFor(async () => (await admin.endOffsets(topic, [0, 1, 2], { timeoutMs: 3_000 })).size === 3, {
        timeoutMs: 60_000,
        message: 'the client answers before the broker stops',
      });
      await broker.pause();
      const timeoutMs = 1_500;
      const started = Date.now();
      // The native client answers one request at a time: asked together, the last would
      // wait for all the others' timeouts before its own began.
      const { value: settledAfter } = await longestStall(() =>
        Promise.all(
          Array.from({ length: 6 }, () =>
            admin.endOffsets(topic, [0, 1, 2], { timeoutMs }).then(
              () => ({ ok: true, ms: Date.now() - started }),
              (err: Error) => ({ ok: false, ms: Date.now() - started, message: err.message }),
            ),
          ),
        ),
      );
      // Every outcome in the message, so that a failure says which request did what and when.
      const outcomes = JSON.stringify(settledAfter);
      for (const outcome of settledAfter) {
        expect(outcome.ok, outcomes).toBe(false);
        expect(outcome.ms, outcomes).toBeLessThan(timeoutMs + SLACK_MS);
      }
      broker.resume();
      await waitFor(async () => (await admin.endOffsets(topic, [0, 1, 2], { timeoutMs: 3_000 })).size === 3, {
        timeoutMs: 60_000,
        message: 'the admin client answers once the broker does',
      });
    } finally {
      broker.resume();
      admin.close();
    }
  });

  it('closing a client while a request waits for its answer does not freeze the process', { timeout: 120_000 }, async () => {
    const admin = new KafkaAdmin(kafkaConnection(broker.brokers));
    try {
      await waitFor(async () => (await admin.endOffsets(topic, [0], { timeoutMs: 3_000 })).size === 1, {
        timeoutMs: 60_000,
        message: 'the client answers before the broker stops',
      });
      await broker.pause();
      const timeoutMs = 4_000;
      const pending = admin.endOffsets(topic, [0], { timeoutMs }).then(
        () => 'answered',
        () => 'failed',
      );
      // Let the request reach the native client and wait there.
      await new Promise((resolve) => setImmediate(resolve));
      const closing = Date.now();
      admin.close();
      const closeMs = Date.now() - closing;
      // A disconnect waits for the running request to let go of the client: done on the
      // main thread, it would stop every timer and socket of the process meanwhile.
      expect(closeMs).toBeLessThan(500);
      const { value: outcome, stallMs } = await longestStall(() => pending);
      expect(outcome).toBe('failed');
      expect(stallMs).toBeLessThan(1_000);
    } finally {
      broker.resume();
    }
    const again = new KafkaAdmin(kafkaConnection(broker.brokers));
    try {
      await waitFor(async () => (await again.endOffsets(topic, [0], { timeoutMs: 3_000 })).size === 1, {
        timeoutMs: 60_000,
        message: 'a new client answers once the broker does',
      });
    } finally {
      again.close();
    }
  });
});
