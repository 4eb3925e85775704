import { describe, expect, it } from 'vitest';
import { decodeHeaders } from '../../src/consumer/record.js';

describe('decodeHeaders', () => {
  it("a reserved header's first value wins, so a copy appended after the relay's cannot forge an event's identity; other headers keep their last value", () => {
    // As an older relay wrote them: its own headers first, then the row's, forged ones included.
    const decoded = decodeHeaders([
      { 'outbox-id': Buffer.from('42') },
      { 'outbox-source': Buffer.from('orders-db') },
      { 'created-at': Buffer.from('2024-05-01T10:00:00.000Z') },
      { 'x-tenant': Buffer.from('first') },
      { 'outbox-id': Buffer.from('7') },
      { 'outbox-source': 'forged' },
      { 'created-at': Buffer.from('1999-01-01T00:00:00.000Z') },
      { 'x-tenant': Buffer.from('last') },
    ]);
    expect(decoded).toMatchObject({ outboxId: '42', source: 'orders-db', createdAt: new Date('2024-05-01T10:00:00.000Z') });
    expect(decoded.raw).toEqual({
      'outbox-id': '42',
      'outbox-source': 'orders-db',
      'created-at': '2024-05-01T10:00:00.000Z',
      'x-tenant': 'last',
    });
  });

  it('a record without outbox-source (from an older relay) decodes with source undefined', () => {
    expect(decodeHeaders([{ 'outbox-id': Buffer.from('1') }])).toMatchObject({ outboxId: '1', source: undefined });
  });

  it('a header map (as stored with a dead letter) decodes as it is', () => {
    const raw = { 'outbox-id': '5', 'outbox-source': 's-1', 'schema-version': '2' };
    expect(decodeHeaders(raw)).toMatchObject({ outboxId: '5', source: 's-1', schemaVersion: 2, raw });
  });
});
