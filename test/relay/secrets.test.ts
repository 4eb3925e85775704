import { inspect } from 'node:util';
import { describe, expect, it } from 'vitest';
import { createConsumer } from '../../src/consumer/index.js';
import { createLogger, redactSecrets } from '../../src/log.js';
import { createRelay } from '../../src/relay/relay.js';
import { databaseUrl } from '../support/db.js';
import { testRelayOptions, waitAllSent } from '../support/relay.js';
import { useTestServices } from '../support/services.js';

const DB_SECRET = 'db-Secret-123';
const KAFKA_SECRET = 'kafka-Secret-456';

/** The test database's URL with a password in it (trust authentication ignores it). */
function urlWithPassword(): string {
  const url = new URL(databaseUrl());
  url.password = DB_SECRET;
  return url.toString();
}

describe('secrets', () => {
  const { pool, freshOutbox } = useTestServices();

  it('no secret reaches a log line, or the printed form of any object the library hands out, at any depth', async () => {
    const { schema, topic } = await freshOutbox(1);
    const lines: string[] = [];
    const logger = createLogger({ level: 'debug', destination: { write: (line: string) => void lines.push(line) } });
    const relay = createRelay(
      testRelayOptions(schema, {
        databaseUrl: urlWithPassword(),
        logger,
        kafka: { properties: { 'sasl.username': 'relay', 'sasl.password': KAFKA_SECRET } },
      }),
    );
    const consumer = createConsumer({
      databaseUrl: urlWithPassword(),
      brokers: String(relay.options.connection.brokers),
      groupId: 'secrets',
      topics: [topic],
      handler: async () => undefined,
      logger,
      kafkaProperties: { 'sasl.username': 'consumer', 'sasl.password': KAFKA_SECRET },
    });
    try {
      await relay.start();
      await pool.query(`insert into ${schema}.messages (topic, key, payload) values ($1, 'k', 'v')`, [topic]);
      await waitAllSent(pool, schema);
      // What users do with what they are handed: log it, print it, serialise it.
      logger.info({ options: relay.options }, 'relay options');
      logger.info({ relay, consumer }, 'objects');
      logger.info({ deep: { a: [{ b: { c: { 'sasl.password': KAFKA_SECRET, connectionString: urlWithPassword() } } }] } }, 'nested');
      const printed = [
        ...lines,
        JSON.stringify(relay.options),
        JSON.stringify(relay),
        JSON.stringify(consumer),
        inspect(relay, { depth: 20 }),
        inspect(relay.options, { depth: 20 }),
        inspect(consumer, { depth: 20 }),
      ].join('\n');
      expect(lines.length).toBeGreaterThan(5);
      expect(printed).not.toContain(DB_SECRET);
      expect(printed).not.toContain(KAFKA_SECRET);
      // Redacted, not dropped: on-call still sees where things point.
      expect(printed).toContain('sasl.username');
      expect(printed).toContain('127.0.0.1:5432');
    } finally {
      await relay.stop();
      await consumer.stop();
    }
  });

  it('redaction copies plain data at any depth, keeps non-secrets, and survives cycles', () => {
    const cyclic: Record<string, unknown> = { name: 'x' };
    cyclic.self = cyclic;
    const out = redactSecrets({
      token: 7,
      accessToken: 'a',
      list: [{ password: 'p' }, { nested: { clientSecret: 's', databaseUrl: 'postgres://u:pw@h/db' } }],
      cyclic,
    }) as Record<string, unknown>;
    expect(out).toEqual({
      token: 7,
      accessToken: '[redacted]',
      list: [{ password: '[redacted]' }, { nested: { clientSecret: '[redacted]', databaseUrl: 'postgres://u:***@h/db' } }],
      cyclic: { name: 'x', self: '[…]' },
    });
  });
});
