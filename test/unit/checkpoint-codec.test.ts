import { describe, expect, it } from 'vitest';
import { checkpointKey, decodeCheckpoint, encodeCheckpoint, type Checkpoint } from '../../src/relay/checkpoint.js';

const json = (value: unknown) => Buffer.from(JSON.stringify(value));
const base = { instance: 'i', group: 'g', shard: 0, relay: 'r' };

describe('checkpoint codec', () => {
  it('a checkpoint reads back as it was written, with no positions (version 2)', () => {
    const checkpoint: Checkpoint = { v: 2, ...base, shard: 3, ids: ['1', '18446744073709551615'] };
    expect(decodeCheckpoint(encodeCheckpoint(checkpoint))).toEqual({ ...checkpoint, partitions: [null, null], offsets: [null, null] });
  });

  it('one shard of one group has one key', () => {
    expect(checkpointKey('orders', 4)).toBe('orders/4');
    expect(checkpointKey('orders', 4)).not.toBe(checkpointKey('orders', 40));
  });

  it('a version 2 checkpoint lists ids without positions; a version 1 one keeps its positions', () => {
    expect(decodeCheckpoint(json({ v: 2, ...base, ids: ['7', '9'] }))).toEqual({ v: 2, ...base, ids: ['7', '9'], partitions: [null, null], offsets: [null, null] });
    expect(decodeCheckpoint(json({ v: 1, ...base, ids: ['7'], partitions: [2], offsets: [40] }))).toEqual({ v: 1, ...base, ids: ['7'], partitions: [2], offsets: [40] });
  });

  it.each([
    ['not JSON', Buffer.from('{')],
    ['null value', null],
    ['an unknown version', json({ v: 3, ...base, ids: ['1'] })],
    ['ids that are not strings', json({ v: 2, ...base, ids: [1] })],
    ['no ids', json({ v: 2, ...base })],
    ['a version 1 record whose positions do not match its ids', json({ v: 1, ...base, ids: ['1', '2'], partitions: [0], offsets: [0, 1] })],
  ])('a malformed checkpoint (%s) is refused with a typed error', (_, value) => {
    expect(() => decodeCheckpoint(value)).toThrow(expect.objectContaining({ code: 'KAFKA_ERROR', message: 'malformed checkpoint record' }));
  });

});
