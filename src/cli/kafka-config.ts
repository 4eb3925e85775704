import { readFileSync } from 'node:fs';
import { OutboxError } from '../errors.js';
import type { KafkaProperties } from '../kafka/config.js';

/** Where a command's librdkafka properties come from; the flag wins over the environment. */
export function kafkaConfigFile(values: { 'kafka-config'?: string | boolean | undefined }): string | undefined {
  const file = (values['kafka-config'] as string | undefined) ?? process.env.OUTBOX_KAFKA_CONFIG;
  return file === '' ? undefined : file;
}

/**
 * The librdkafka properties (TLS, SASL, ...) of a command's Kafka clients, read from the
 * file of `--kafka-config FILE` or env `OUTBOX_KAFKA_CONFIG`; undefined when neither is
 * given. A file, like the `--command-config` of Kafka's own tools, keeps passwords out of
 * the process's argument list and environment.
 */
export function kafkaPropertiesFrom(values: { 'kafka-config'?: string | boolean | undefined }): KafkaProperties | undefined {
  const file = kafkaConfigFile(values);
  if (file === undefined) return undefined;
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (cause) {
    const reason = (cause as NodeJS.ErrnoException).code ?? (cause as Error).message;
    throw new OutboxError('INVALID_ARGUMENT', `--kafka-config ${file}: cannot read it (${reason})`, { cause });
  }
  return parseKafkaProperties(text, file);
}

/**
 * `name=value` lines as in a Java properties file, without its escapes and continuation
 * lines: blank lines and lines starting with `#` or `!` are skipped, the name is trimmed,
 * the value is the rest of the line after the first `=` with leading blanks removed, and a
 * name given twice keeps its last value. Errors name the line by number only: its text may
 * hold a password.
 */
export function parseKafkaProperties(text: string, source: string): KafkaProperties {
  const properties: KafkaProperties = {};
  for (const [index, raw] of text.split(/\r?\n/).entries()) {
    const line = raw.trimStart();
    if (line === '' || line.startsWith('#') || line.startsWith('!')) continue;
    const eq = line.indexOf('=');
    const name = eq < 0 ? '' : line.slice(0, eq).trim();
    if (!/^[A-Za-z0-9_.-]+$/.test(name)) {
      throw new OutboxError('INVALID_ARGUMENT', `--kafka-config ${source}, line ${index + 1}: expected name=value`);
    }
    properties[name] = line.slice(eq + 1).trimStart();
  }
  return properties;
}
