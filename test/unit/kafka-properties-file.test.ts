import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { kafkaPropertiesFrom, parseKafkaProperties } from '../../src/cli/kafka-config.js';

describe('the CLI\'s Kafka properties file', () => {
  it('reads name=value lines as Java properties do, without comments and blank lines', () => {
    const text = '# SASL\n\n  ! also a comment\nsecurity.protocol = SASL_SSL\r\nsasl.password=a=b#c \nsasl.username=relay\nsasl.username=relay-2\n';
    expect(parseKafkaProperties(text, 'f')).toEqual({
      'security.protocol': 'SASL_SSL',
      // Everything after the first '=', kept as it is: '=', '#' and a trailing blank included.
      'sasl.password': 'a=b#c ',
      'sasl.username': 'relay-2',
    });
  });

  it('names a malformed line by its number, never by its text (it may hold a password)', () => {
    for (const line of ['sasl.password:Pa55-secret', 'Pa55-secret', '=Pa55-secret', 'sasl password=Pa55-secret']) {
      let message = '';
      try {
        parseKafkaProperties(`security.protocol=SASL_SSL\n${line}\n`, 'client.properties');
      } catch (err) {
        message = `${(err as Error).message} ${(err as { code?: string }).code}`;
      }
      expect(message).toBe('--kafka-config client.properties, line 2: expected name=value INVALID_ARGUMENT');
    }
  });

  it('comes from --kafka-config, else OUTBOX_KAFKA_CONFIG; a file that cannot be read is bad input', () => {
    const dir = mkdtempSync(join(tmpdir(), 'outbox-kafka-config-'));
    const saved = process.env.OUTBOX_KAFKA_CONFIG;
    try {
      writeFileSync(join(dir, 'a.properties'), 'client.id=a\n');
      writeFileSync(join(dir, 'b.properties'), 'client.id=b\n');
      process.env.OUTBOX_KAFKA_CONFIG = join(dir, 'b.properties');
      expect(kafkaPropertiesFrom({ 'kafka-config': join(dir, 'a.properties') })).toEqual({ 'client.id': 'a' });
      expect(kafkaPropertiesFrom({})).toEqual({ 'client.id': 'b' });
      delete process.env.OUTBOX_KAFKA_CONFIG;
      expect(kafkaPropertiesFrom({})).toBeUndefined();
      expect(() => kafkaPropertiesFrom({ 'kafka-config': join(dir, 'missing') })).toThrow(/--kafka-config .*missing: cannot read it \(ENOENT\)/);
    } finally {
      if (saved === undefined) delete process.env.OUTBOX_KAFKA_CONFIG;
      else process.env.OUTBOX_KAFKA_CONFIG = saved;
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
