import Kafka from '@confluentinc/kafka-javascript';
import { describe, expect, it } from 'vitest';
import { listOffsetsProblem } from '../../src/kafka/admin.js';

const ask = (offset: InstanceType<typeof Kafka.OffsetSpec>, partitions = [0, 1]) => partitions.map((partition) => ({ topic: 't', partition, offset }));
const answer = (offsets: Array<[number, number]>) => offsets.map(([partition, offset]) => ({ topic: 't', partition, offset, timestamp: -1 }));

describe('a ListOffsets answer is used only when it answers every partition asked', () => {
  it('an answer with every partition and its offset is used', () => {
    expect(listOffsetsProblem(ask(Kafka.OffsetSpec.LATEST), answer([[0, 12], [1, 0]]))).toBeUndefined();
  });

  it('an answer that left out a partition (a request out of time, answered as a success) is refused, not read as an end of 0', () => {
    expect(listOffsetsProblem(ask(Kafka.OffsetSpec.LATEST), [])?.message).toBe('list offsets answered nothing for t[0]');
    expect(listOffsetsProblem(ask(Kafka.OffsetSpec.LATEST), answer([[0, 12]]))?.message).toBe('list offsets answered nothing for t[1]');
  });

  it('a negative offset for the end or the start of a log is refused', () => {
    expect(listOffsetsProblem(ask(Kafka.OffsetSpec.LATEST), answer([[0, 12], [1, -1]]))?.message).toBe('list offsets answered offset -1 for the end of t[1]');
    expect(listOffsetsProblem(ask(Kafka.OffsetSpec.EARLIEST), answer([[0, -1001], [1, 0]]))?.message).toBe('list offsets answered offset -1001 for the start of t[0]');
  });

  it('for a time, -1 is an answer (no record at or after it)', () => {
    expect(listOffsetsProblem(ask(new Kafka.OffsetSpec(1_700_000_000_000)), answer([[0, -1], [1, 7]]))).toBeUndefined();
  });

  it("a partition's own error is the answer's problem", () => {
    const failed = [{ topic: 't', partition: 0, offset: -1, timestamp: -1, error: Object.assign(new Error('Broker: Not leader for partition'), { code: 6 }) }];
    expect(listOffsetsProblem(ask(Kafka.OffsetSpec.LATEST, [0]), failed as never)?.message).toMatch(/list offsets of t\[0\]/);
  });
});
