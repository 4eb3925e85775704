import { describe, expect, it } from 'vitest';
import { OptionsError } from '../../src/errors.js';
import { createLogger } from '../../src/log.js';
import { encodedSize, validateEvent } from '../../src/outbox/validate.js';
import { RELAY_OPTION_BOUNDS, resolveRelayOptions, type RelayOptions } from '../../src/relay/options.js';
import { recordSize, toRecord, tracedRecord } from '../../src/relay/records.js';
import type { ClaimedRow } from '../../src/sql/outbox-claim.js';

const base: RelayOptions = { databaseUrl: 'postgres://x', brokers: 'b:9092' };

describe('relay options', () => {
  it('defaults: the record limit is the producer message.max.bytes, 1,000,000 unless kafka.properties sets it', () => {
    expect(resolveRelayOptions(base)).toMatchObject({ shards: 4, batchSize: 500, maxRecordBytes: 1_000_000, maxBatchBytes: 16 * 1024 * 1024 });
    expect(resolveRelayOptions({ ...base, kafka: { properties: { 'message.max.bytes': '200000' } } }).maxRecordBytes).toBe(200_000);
  });

  it('every numeric option is refused outside its bounds, one past each end, with its name and range', () => {
    const set = (name: string, value: number): RelayOptions => {
      const [outer, inner] = name.split('.') as [string, string | undefined];
      if (name === 'maxRecordBytes') return { ...base, kafka: { properties: { 'message.max.bytes': value } } };
      if (inner === undefined) return { ...base, [outer]: value };
      // The pair's other end at its own bound, so only this value is out of range.
      const other = inner === 'minMs' ? { maxMs: RELAY_OPTION_BOUNDS[`${outer}.maxMs` as keyof typeof RELAY_OPTION_BOUNDS][1] } : {};
      return { ...base, [outer]: { ...other, [inner]: value } };
    };
    for (const [name, [min, max]] of Object.entries(RELAY_OPTION_BOUNDS)) {
      for (const bad of [min - 1, max + 1, min + 0.5]) {
        expect(() => resolveRelayOptions(set(name, bad)), `${name}=${bad}`).toThrow(OptionsError);
        expect(() => resolveRelayOptions(set(name, bad)), `${name}=${bad}`).toThrow(`${name} must be an integer in ${min}..${max}`);
      }
      if (!name.endsWith('maxMs')) expect(() => resolveRelayOptions(set(name, min)), `${name}=${min}`).not.toThrow();
      expect(() => resolveRelayOptions(set(name, max)), `${name}=${max}`).not.toThrow();
    }
  });

  it.each([
    [{ batchsize: 100 }, /batchsize is not a relay option/],
    [{ retention: { keep: 1 } }, /retention.keep is not an option/],
    [{ rowBackoff: { minMs: 5_000, maxMs: 1_000 } }, /rowBackoff.maxMs must be >= rowBackoff.minMs/],
    [{ shards: '4' }, /shards must be an integer in 1..1024, got "4"/],
    [{ strict: 'yes' }, /strict must be true or false/],
    [{ relayId: 'a\nb' }, /relayId must be 1-200 printable characters/],
    [{ takeOverFrom: 'outbox-relay' }, /takeOverFrom "outbox-relay": give the name of the relay group serving the outbox now/],
    [{ kafka: { properties: { 'message.max.bytes': 'lots' } } }, /maxRecordBytes must be an integer/],
  ])('%j is refused with an actionable error', (input, message) => {
    expect(() => resolveRelayOptions({ ...base, ...(input as object) })).toThrow(message);
  });
});

describe('the one size rule', () => {
  const row = (payload: Buffer, _source: string): ClaimedRow => ({
    id: '9223372036854775807',
    topic: 't',
    key: 'order-1',
    key_bytes: 7,
    payload,
    headers: { tenant: 'acme', 'x-long': 'v'.repeat(300) },
    event_type: 'OrderPlaced',
    aggregate_type: 'order',
    aggregate_id: '1',
    schema_version: 3,
    traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',
    created_at: new Date(),
    attempts: 0,
    state: 'pending',
  });
  const event = (payload: Buffer) => ({
    topic: 't',
    key: 'order-1',
    payload,
    headers: { tenant: 'acme', 'x-long': 'v'.repeat(300) },
    eventType: 'OrderPlaced',
    aggregateType: 'order',
    aggregateId: '1',
    schemaVersion: 3,
    traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',
  });
  const log = createLogger({ level: 'silent' });

  it('enqueue counts what the relay counts, with the source id at its longest', () => {
    for (const bytes of [0, 1, 127, 128, 16_383, 16_384, 999_000]) {
      const payload = Buffer.alloc(bytes, 7);
      const relayed = recordSize(toRecord(row(payload, 'x'.repeat(200)), 'x'.repeat(200), log));
      expect(encodedSize(validateEvent(event(payload), { maxMessageBytes: 2_000_000 }))).toBe(relayed);
      // With the default source id (a UUID) the relay's figure is smaller, never larger.
      expect(recordSize(toRecord(row(payload, 'u'.repeat(36)), 'u'.repeat(36), log))).toBeLessThan(relayed);
    }
  });
  it('tracing never makes a record too large: a header that does not fit is left out', () => {
    const traceparent = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';
    const untraced = { ...row(Buffer.alloc(1000, 7), 'u'.repeat(36)), traceparent: null };
    const record = toRecord(untraced, 'u'.repeat(36), log);
    const size = recordSize(record);
    const traced = tracedRecord(record, null, traceparent, 2 * size);
    expect(traced.headers).toContainEqual({ traceparent });
    const grown = recordSize(traced);
    expect(grown).toBeGreaterThan(size);
    expect(recordSize(tracedRecord(record, null, traceparent, grown))).toBe(grown);
    expect(tracedRecord(record, null, traceparent, grown - 1)).toBe(record);
    // A row's own traceparent is replaced by one of the same size, so never left out.
    const own = toRecord(row(Buffer.alloc(1000, 7), 'u'.repeat(36)), 'u'.repeat(36), log);
    const replaced = tracedRecord(own, row(Buffer.alloc(0), '').traceparent, traceparent.replace('b7ad', 'c8be'), recordSize(own));
    expect(recordSize(replaced)).toBe(recordSize(own));
    expect(replaced.headers.filter((h) => 'traceparent' in h)).toEqual([{ traceparent: traceparent.replace('b7ad', 'c8be') }]);
  });
});
