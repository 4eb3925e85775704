import { describe, expect, it } from 'vitest';
import { createLogger } from '../../src/log.js';
import { MAX_KEY_BYTES } from '../../src/outbox/key-size.js';
import { cutBatch, type Cut } from '../../src/relay/batch-cut.js';
import { toRecord } from '../../src/relay/records.js';
import type { ClaimedRow } from '../../src/sql/outbox-claim.js';

const silent = createLogger({ level: 'silent' });
const topics = new Map([
  ['orders', { exists: true }],
  ['gone', { exists: false, error: 'Broker: Unknown topic or partition' }],
]);
const limits = { maxRecordBytes: 1_000, maxBatchBytes: 2_000 };

let nextId = 1;
function row(key: string | null, overrides: Partial<ClaimedRow> = {}): ClaimedRow {
  const id = String(nextId++);
  return {
    id,
    topic: 'orders',
    key,
    key_bytes: key === null ? null : Buffer.byteLength(key),
    payload: Buffer.alloc(100),
    headers: {},
    event_type: null,
    aggregate_type: null,
    aggregate_id: null,
    schema_version: null,
    traceparent: null,
    created_at: new Date('2026-12-01T00:00:00Z'),
    attempts: 0,
    state: 'pending',
    ...overrides,
  };
}

const cut = (rows: ClaimedRow[]): Cut => cutBatch(rows, topics, limits, (r) => toRecord(r, 'src', silent));
const ids = (items: Array<{ row: ClaimedRow }>) => items.map((i) => i.row.id);

describe('batch cutting', () => {
  it('rows go together in claim order, cut before the batch byte limit: a prefix, so the rest goes next and per-key order holds', () => {
    const rows = Array.from({ length: 30 }, (_, i) => row(`k${i % 3}`));
    const { items, retries, setAside } = cut(rows);
    expect(retries).toEqual([]);
    expect(setAside).toEqual([]);
    expect(items.length).toBeGreaterThan(1);
    expect(items.length).toBeLessThan(rows.length);
    expect(ids(items)).toEqual(ids(rows.slice(0, items.length).map((r) => ({ row: r }))));
  });

  it('a batch holds at least one row, however large', () => {
    const big = row('k', { payload: Buffer.alloc(900) });
    expect(ids(cutBatch([big, row('k', { payload: Buffer.alloc(900) })], topics, { maxRecordBytes: 10_000, maxBatchBytes: 500 }, (r) => toRecord(r, 'src', silent)).items)).toEqual([big.id]);
  });

  it('a due retry goes alone and first; the later rows of its key wait until it is sent, other keys flow', () => {
    const retry = row('a', { state: 'failed', attempts: 2 });
    const after = row('a');
    const other = row('b');
    const { retries, items } = cut([retry, after, other]);
    expect(ids(retries)).toEqual([retry.id]);
    expect(ids(items)).toEqual([other.id]);
  });

  it('a retry behind an earlier row of its key in the claim waits for the next claim, and so does the rest of its key', () => {
    const earlier = row('a');
    const retry = row('a', { state: 'failed', attempts: 1 });
    const later = row('a');
    const { retries, items } = cut([earlier, retry, later]);
    expect(retries).toEqual([]);
    expect(ids(items)).toEqual([earlier.id]);
  });

  it('a row no retry can help is dead at once (too large, headers that are not strings) and its key waits; an unknown topic fails it and its key waits', () => {
    const tooLarge = row('a', { payload: Buffer.alloc(5_000) });
    const behindTooLarge = row('a');
    const badHeaders = row('b', { headers: { n: 1 } as never });
    const behindBadHeaders = row('b');
    const unknown = row('c', { topic: 'gone' });
    const behindUnknown = row('c');
    const fine = row('d');
    const { setAside, items } = cut([tooLarge, behindTooLarge, badHeaders, behindBadHeaders, unknown, behindUnknown, fine]);
    expect(setAside.map((s) => [s.row.id, s.dead])).toEqual([
      [tooLarge.id, true],
      [badHeaders.id, true],
      [unknown.id, false],
    ]);
    expect(setAside[0]!.reason).toMatch(/exceeds the limit of 1000 bytes/);
    expect(setAside[2]!.reason).toBe('unknown topic gone: Broker: Unknown topic or partition');
    expect(ids(items)).toEqual([fine.id]);
  });

  it('every row of a key too long for the order indexes is dead, each on its own: none overtakes another', () => {
    const long = 'k'.repeat(MAX_KEY_BYTES + 1);
    const first = row(long);
    const second = row(long);
    const { setAside, items } = cut([first, second, row(null)]);
    expect(setAside.map((s) => [s.row.id, s.dead])).toEqual([
      [first.id, true],
      [second.id, true],
    ]);
    expect(items).toHaveLength(1);
  });
});
