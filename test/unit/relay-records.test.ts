import { describe, expect, it } from 'vitest';
import { createLogger } from '../../src/log.js';
import { HEADER } from '../../src/outbox/event.js';
import { invalidHeaders, recordSize, toRecord, tracedRecord } from '../../src/relay/records.js';
import type { ClaimedRow } from '../../src/sql/outbox-claim.js';

const silent = createLogger({ level: 'silent' });

function row(overrides: Partial<ClaimedRow> = {}): ClaimedRow {
  return {
    id: '42',
    topic: 'orders',
    key: 'order-1',
    key_bytes: 7,
    payload: Buffer.from('{"total":10}'),
    headers: { tenant: 'acme' },
    event_type: 'order.paid',
    aggregate_type: 'order',
    aggregate_id: '1',
    schema_version: 2,
    traceparent: null,
    created_at: new Date('2026-12-01T10:00:00.000Z'),
    attempts: 0,
    state: 'pending',
    ...overrides,
  };
}

const names = (headers: Array<Record<string, unknown>>) => headers.flatMap((h) => Object.keys(h));
const value = (headers: Array<Record<string, unknown>>, name: string) => headers.find((h) => Object.hasOwn(h, name))?.[name];

describe('relay records', () => {
  it("a row becomes a record with its key and payload, the relay's headers first and the row's own after them", () => {
    const record = toRecord(row(), 'orders-db', silent);
    expect(record).toMatchObject({ topic: 'orders', key: 'order-1', value: Buffer.from('{"total":10}') });
    expect(value(record.headers, HEADER.outboxId)).toBe('42');
    expect(value(record.headers, HEADER.source)).toBe('orders-db');
    expect(value(record.headers, HEADER.eventType)).toBe('order.paid');
    expect(value(record.headers, HEADER.createdAt)).toBe('2026-12-01T10:00:00.000Z');
    expect(names(record.headers).at(-1)).toBe('tenant');
  });

  it("a row's header with a reserved name, in any letter case, never reaches the record: the relay's value is the only one", () => {
    const warnings: unknown[] = [];
    const log = { ...silent, warn: (o: unknown) => warnings.push(o) } as unknown as typeof silent;
    const record = toRecord(row({ headers: { 'Outbox-Id': '1', 'OUTBOX-SOURCE': 'forged', tenant: 'acme' } }), 'orders-db', log);
    expect(names(record.headers).filter((n) => n.toLowerCase() === HEADER.outboxId)).toEqual([HEADER.outboxId]);
    expect(value(record.headers, HEADER.source)).toBe('orders-db');
    // The names are logged, never the values.
    expect(JSON.stringify(warnings)).toContain('Outbox-Id');
    expect(JSON.stringify(warnings)).not.toContain('forged');
  });

  it.each([
    [{ n: 1 }, /is a number/],
    [{ n: null }, /is null/],
    [{ n: ['a'] }, /is an array/],
    [{ n: { a: 1 } }, /is an object/],
  ])('headers %j are refused with a reason that says how to fix the row', (headers, reason) => {
    expect(invalidHeaders(headers)).toMatch(reason);
    expect(invalidHeaders(headers)).toMatch(/outbox-relay retry/);
  });

  it('string headers, no headers and null headers are fine', () => {
    expect(invalidHeaders({ a: 'b' })).toBeUndefined();
    expect(invalidHeaders({})).toBeUndefined();
    expect(invalidHeaders(null)).toBeUndefined();
  });

  it("tracing replaces the row's traceparent, and never makes a record too large", () => {
    const own = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';
    const trace = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';
    const record = toRecord(row({ traceparent: own }), 'orders-db', silent);
    const traced = tracedRecord(record, own, trace, 1_000_000);
    expect(names(traced.headers).filter((n) => n === HEADER.traceparent)).toHaveLength(1);
    expect(value(traced.headers, HEADER.traceparent)).toBe(trace);
    expect(tracedRecord(record, own, own, 1_000_000)).toBe(record);
    expect(tracedRecord(record, own, undefined, 1_000_000)).toBe(record);
    const plain = toRecord(row(), 'orders-db', silent);
    expect(tracedRecord(plain, null, trace, recordSize(plain))).toBe(plain);
  });
});
