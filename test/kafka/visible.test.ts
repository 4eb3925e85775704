import { describe, expect, it } from 'vitest';
import { TransactionalProducer } from '../../src/kafka/producer.js';
import { recordsWaiting } from '../../src/kafka/visible.js';
import { freshTopic } from '../support/kafka.js';
import { useTestServices } from '../support/services.js';
import { uniqueName, waitFor } from '../support/wait.js';

describe('records waiting between a stored offset and the log end', () => {
  const { admin, producer, connection } = useTestServices();

  it('a range holding committed records is waiting, one of markers and aborted records is not, while another partition is busy', async () => {
    const topic = await freshTopic(admin, 3);
    // Partition 0: three committed records (offsets 0-2), a commit marker (3).
    await producer.send(topic, ['a', 'b', 'c'].map((v) => ({ key: v, value: v, partition: 0 })));
    // Partition 1: an aborted transaction of two records and its marker, then a committed
    // record and its marker: offsets 0-2 hold nothing a read_committed reader gets.
    const aborting = new TransactionalProducer({ connection, transactionalId: uniqueName('aborting') });
    await aborting.connect();
    await aborting.init(30_000);
    await aborting.begin();
    await Promise.all(['x', 'y'].map((v) => aborting.produce({ topic, partition: 1, key: v, value: Buffer.from(v), headers: [] })));
    await aborting.abort(30_000);
    await aborting.disconnect();
    const [last] = await producer.send(topic, [{ key: 'z', value: 'z', partition: 1 }]);
    // A commit returns before its markers are written: wait until both partitions' last
    // stable offsets are past their last transaction (3 records and a marker; 'z' and its marker).
    const ends = await waitFor(async () => {
      const stable = await admin.endOffsets(topic, [0, 1], { committed: true });
      return stable.get(0) === 4 && stable.get(1) === last!.offset + 2 ? stable : undefined;
    }, { message: 'both transactions stable' });
    // Partition 2 stays busy while the probe runs, so fetches answer at once.
    let busy = true;
    const traffic = (async () => {
      while (busy) await producer.send(topic, [{ key: 'busy', value: 'busy', partition: 2 }]);
    })();
    try {
      const answers = await recordsWaiting(
        connection,
        [
          { topic, partition: 0, from: 1, end: ends.get(0)! },
          { topic, partition: 1, from: last!.offset + 1, end: ends.get(1)! },
        ],
        10_000,
      );
      expect(answers).toEqual(new Map([[`${topic}:0`, true], [`${topic}:1`, false]]));
      // From offset 0 of partition 1, the aborted records are passed over and 'z' is found.
      expect((await recordsWaiting(connection, [{ topic, partition: 1, from: 0, end: ends.get(1)! }], 10_000)).get(`${topic}:1`)).toBe(true);
      // Only the commit marker after the last record of partition 0.
      expect((await recordsWaiting(connection, [{ topic, partition: 0, from: 3, end: 4 }], 10_000)).get(`${topic}:0`)).toBe(false);
    } finally {
      busy = false;
      await traffic;
    }
  });
});
