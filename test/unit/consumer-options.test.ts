import { describe, expect, it } from 'vitest';
import { judgeStoredOffset } from '../../src/consumer/incarnation.js';
import { resolveConsumerOptions, type ConsumerOptions } from '../../src/consumer/options.js';

const base: ConsumerOptions = { databaseUrl: 'postgres://x', brokers: 'b:9092', groupId: 'g', topics: ['t'], handler: async () => undefined };

describe('consumer options', () => {
  it('defaults: 30 s handler timeout, 5 s lock timeout, earliest on a stale offset, a week of inbox', () => {
    const o = resolveConsumerOptions(base);
    expect(o).toMatchObject({ handlerTimeoutMs: 30_000, lockTimeoutMs: 5_000, onOffsetOutOfRange: 'earliest', poolSize: 10, partitionConcurrency: undefined });
    expect(o.inboxRetention).toEqual({ keepMs: 7 * 24 * 3600 * 1000, intervalMs: 60_000, batchSize: 1_000 });
  });

  it('a statement is given up as unanswered 10 s past the handler timeout, unless told otherwise', () => {
    expect(resolveConsumerOptions(base).queryTimeoutMs).toBe(40_000);
    expect(resolveConsumerOptions({ ...base, handlerTimeoutMs: 2_000 }).queryTimeoutMs).toBe(12_000);
    expect(resolveConsumerOptions({ ...base, queryTimeoutMs: 31_000 }).queryTimeoutMs).toBe(31_000);
  });

  it.each([
    [{ handlerTimeoutMs: 300_000 }, /handlerTimeoutMs .* must be below maxPollIntervalMs/],
    [{ handlerTimeoutMs: 287_001 }, /at most 287000/],
    [{ lockTimeoutMs: 50 }, /lockTimeoutMs must be an integer >= 100/],
    [{ maxPollIntervalMs: 20_000, sessionTimeoutMs: 10_000 }, /handlerTimeoutMs \(30000\) must be below maxPollIntervalMs \(20000\)/],
    [{ onOffsetOutOfRange: 'latest' as never }, /onOffsetOutOfRange must be 'earliest' or 'block'/],
    [{ partitionConcurrency: 0 }, /partitionConcurrency must be an integer >= 1/],
    [{ lockTimeoutMs: 1.5 }, /lockTimeoutMs must be an integer/],
    [{ inboxRetention: { keepMs: -1 } }, /inboxRetention.keepMs/],
    [{ pool: {} as never, poolSize: 5 }, /exactly one of databaseUrl or pool|poolSize applies/],
    [{ batchHandler: async () => undefined }, /exactly one of handler .* or batchHandler/],
    [{ handler: undefined }, /exactly one of handler .* or batchHandler/],
    [{ handler: undefined, batchHandler: 'insert' as never }, /batchHandler must be a function/],
    [{ queryTimeoutMs: 30_000 }, /queryTimeoutMs \(30000\) must be above handlerTimeoutMs \(30000\)/],
    [{ queryTimeoutMs: 500 }, /queryTimeoutMs must be an integer >= 1000/],
    [{ pool: {} as never, databaseUrl: undefined, queryTimeoutMs: 60_000 }, /queryTimeoutMs applies to the pool the consumer creates/],
  ])('%j is refused with an actionable error', (input, message) => {
    expect(() => resolveConsumerOptions({ ...base, ...input })).toThrow(message);
  });
});

describe('consumer options: batch handler', () => {
  it('a batch handler stands in for the record handler too (dead-letter replays call it with one record)', async () => {
    const seen: number[][] = [];
    const o = resolveConsumerOptions({ ...base, handler: undefined, batchHandler: async (records) => void seen.push(records.map((r) => r.offset)) });
    expect(o.batchHandler).toBeTypeOf('function');
    await o.handler({ offset: 7, headers: { raw: {} } } as never, {} as never);
    expect(seen).toEqual([[7]]);
  });
});

describe('a stored offset judged against the partition log', () => {
  const log = { topicId: 'new', start: 0, end: 4 };
  it.each([
    [{ offset: 3, topicId: 'new' }, undefined],
    [{ offset: 4, topicId: 'new' }, undefined],
    [{ offset: 2, topicId: null }, undefined],
    [{ offset: 3, topicId: 'old' }, 'topic-recreated'],
    [{ offset: 14, topicId: null }, 'beyond-log-end'],
    [{ offset: 14, topicId: 'old' }, 'topic-recreated'],
  ] as const)('%j → %s', (stored, verdict) => {
    expect(judgeStoredOffset(stored, log)).toBe(verdict);
  });
  it('an offset below the log start (records deleted before they were applied) is stale too', () => {
    expect(judgeStoredOffset({ offset: 2, topicId: 'new' }, { topicId: 'new', start: 5, end: 9 })).toBe('before-log-start');
  });
  it('a broker that reports no topic id is judged by the bounds alone', () => {
    expect(judgeStoredOffset({ offset: 3, topicId: 'old' }, { topicId: undefined, start: 0, end: 4 })).toBeUndefined();
  });
});
