import { describe, expect, it } from 'vitest';
import { TransactionalProducer } from '../../src/kafka/producer.js';
import { checkpointKey } from '../../src/relay/checkpoint.js';
import { readTopic } from '../support/kafka.js';
import { drainOutbox, expectExactlyOnce, startRelay, testRelayOptions } from '../support/relay.js';
import { useTestServices } from '../support/services.js';

const json = (value: unknown) => Buffer.from(JSON.stringify(value));

describe('checkpoint records', () => {
  describe('against the broker', () => {
    const { connection, pool, freshOutbox } = useTestServices();

    it('a version 1 checkpoint an earlier relay committed and never marked is reconciled with its positions, not published again', async () => {
      const { schema, topic } = await freshOutbox(2);
      const options = testRelayOptions(schema, { shards: 1 });
      // A first start registers the group and creates its checkpoint topic.
      await (await startRelay(schema, options)).stop();
      const { rows } = await pool.query<{ id: string; key: string }>(
        `insert into ${schema}.messages (topic, key, payload) select $1::text, 'k' || (i % 3), convert_to('v' || i, 'UTF8') from generate_series(1, 12) i returning id::text, key`,
        [topic],
      );
      const { rows: group } = await pool.query<{ instance_id: string }>(`select instance_id::text from ${schema}.relay_groups where relay_group = $1::text`, [options.group]);

      // An earlier relay version commits the rows with a version 1 checkpoint and dies before marking them.
      const earlier = new TransactionalProducer({ connection, transactionalId: `${options.group}-0` });
      await earlier.connect();
      await earlier.init(30_000);
      await earlier.begin();
      const delivered = await Promise.all(
        rows.map((r) => earlier.produce({ topic, key: r.key, value: Buffer.from(`v${r.id}`), headers: [{ 'outbox-id': Buffer.from(r.id) }] })),
      );
      await earlier.produce({
        topic: `outbox-relay.checkpoints.${options.group}`,
        partition: 0,
        key: checkpointKey(options.group!, 0),
        value: json({
          v: 1,
          instance: group[0]!.instance_id,
          group: options.group,
          shard: 0,
          relay: 'earlier',
          ids: rows.map((r) => r.id),
          partitions: delivered.map((d) => d.partition),
          offsets: delivered.map((d) => d.offset),
        }),
        headers: [],
      });
      await earlier.commit(30_000);
      await earlier.disconnect();

      expect(await drainOutbox(pool, schema, options)).toBe(rows.length);
      const { rows: marked } = await pool.query<{ kafka_partition: number; kafka_offset: string }>(
        `select kafka_partition, kafka_offset::text from ${schema}.messages order by id`,
      );
      expect(marked).toEqual(delivered.map((d) => ({ kafka_partition: d.partition, kafka_offset: String(d.offset) })));
      expectExactlyOnce(await readTopic(connection, topic, 2, { expected: rows.length }), rows.map((r) => r.id));
    });
  });
});
