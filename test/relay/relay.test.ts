import { describe, expect, it } from 'vitest';
import { enqueue } from '../../src/outbox/enqueue.js';
import { inTransaction } from '../support/db.js';
import { headerValue } from '../support/kafka.js';
import { drainOutbox, expectPublishedOnce } from '../support/relay.js';
import { useTestServices } from '../support/services.js';

describe('relay', () => {
  const { connection, pool, freshOutbox } = useTestServices();

  it('publishes every committed row once, per key in order, with outbox headers, and marks it sent with its position', async () => {
    const { schema, topic } = await freshOutbox(3);
    const ids: string[] = [];
    for (let i = 0; i < 10; i++) {
      ids.push(
        ...(await inTransaction(pool, (client) =>
          enqueue(
            client,
            Array.from({ length: 30 }, (_, j) => ({
              topic,
              key: `order-${j % 7}`,
              payload: { i, j },
              eventType: 'OrderPlaced',
              aggregateType: 'order',
              aggregateId: `order-${j % 7}`,
              schemaVersion: 3,
              traceparent: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01',
              headers: { source: 'test' },
            })),
            { schema },
          ),
        )),
      );
    }
    await drainOutbox(pool, schema);
    const read = await expectPublishedOnce(connection, topic, 3, ids, { expected: ids.length });
    const sample = read[0]!;
    expect(headerValue(sample, 'event-type')).toBe('OrderPlaced');
    expect(headerValue(sample, 'aggregate-type')).toBe('order');
    expect(headerValue(sample, 'schema-version')).toBe('3');
    expect(headerValue(sample, 'traceparent')).toBe('00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01');
    expect(headerValue(sample, 'source')).toBe('test');
    expect(new Date(headerValue(sample, 'created-at')!).getTime()).not.toBeNaN();
    const { rows } = await pool.query(
      `select id::text, kafka_partition, kafka_offset::int from ${schema}.messages where id = $1::bigint`,
      [headerValue(sample, 'outbox-id')],
    );
    expect(rows[0]).toEqual({ id: headerValue(sample, 'outbox-id'), kafka_partition: sample.partition, kafka_offset: sample.offset });
  });
});
