import type pg from 'pg';
import { describe, expect, it } from 'vitest';
import { useTestServices } from '../support/services.js';
import { uniqueName, waitFor } from '../support/wait.js';
import { effectHandler, effectTotal, testConsumer } from '../support/consumer.js';

const ownPool = (consumer: unknown) => (consumer as { s: { pool?: pg.Pool & { ended?: boolean } } }).s.pool;

describe('consumer lifecycle', () => {
  const { pool, producer, freshEffects, startConsumer } = useTestServices();

  it('a start that fails closes what it opened, and start() again gives the same error; stop() after it returns at once', async () => {
    // A schema that was never migrated: the start fails after the pool is open.
    const consumer = testConsumer({ schema: uniqueName('nothing_here'), topics: ['t'], handler: async () => undefined });
    const first = await consumer.start().catch((err: unknown) => err);
    expect(first).toMatchObject({ code: 'NOT_FOUND' });
    expect(ownPool(consumer)?.ended).toBe(true);
    expect(await consumer.start().catch((err: unknown) => err)).toBe(first);
    await consumer.stop();
  });

  it('a stopped consumer cannot start again: STOPPED, create a new one', async () => {
    const { schema, topic } = await freshEffects(1);
    await producer.send(topic, [{ key: 'a', value: 'a' }]);
    const consumer = await startConsumer({ schema, topics: [topic], handler: effectHandler(schema) });
    await waitFor(async () => (await effectTotal(pool, schema)) === 1, { timeoutMs: 30_000, message: 'the record applied' });
    await consumer.stop();
    expect(ownPool(consumer)?.ended).toBe(true);
    await expect(consumer.start()).rejects.toMatchObject({ code: 'STOPPED', message: expect.stringMatching(/create a new one/) });
    // Never started, then stopped: the same.
    const unused = testConsumer({ schema, topics: [topic], handler: effectHandler(schema) });
    await unused.stop();
    await expect(unused.start()).rejects.toMatchObject({ code: 'STOPPED' });
  });
});
