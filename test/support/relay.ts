import type { Message } from '@confluentinc/kafka-javascript';
import type pg from 'pg';
import { expect } from 'vitest';
import { createLogger } from '../../src/log.js';
import { createRelay, type Relay } from '../../src/relay/relay.js';
import type { RelayOptions } from '../../src/relay/options.js';
import { databaseUrl } from './db.js';
import type { KafkaConnection } from '../../src/kafka/config.js';
import { headerValue, kafkaConnection, readTopic, type ReadOptions } from './kafka.js';
import { exactlyOnceReport } from './exactly-once.js';
import { waitFor } from './wait.js';

/**
 * Relay options suited to tests: quick leases and retries, quiet logs. The group is named
 * after the schema: one group serves an outbox, so every relay of a test shares it.
 */
export function testRelayOptions(schema: string, overrides: Partial<RelayOptions> = {}): RelayOptions {
  return {
    databaseUrl: databaseUrl(),
    brokers: String(kafkaConnection().brokers),
    schema,
    group: `relay-${schema}`.replaceAll('_', '-').slice(0, 100),
    shards: 4,
    leaseMs: 3_000,
    pollIntervalMs: 500,
    failureBackoff: { minMs: 100, maxMs: 2_000 },
    rowBackoff: { minMs: 100, maxMs: 1_000 },
    retention: false,
    logger: createLogger({ level: process.env.TEST_LOG_LEVEL ?? 'silent' }),
    ...overrides,
  };
}

export async function startRelay(schema: string, overrides: Partial<RelayOptions> = {}): Promise<Relay> {
  const relay = createRelay(testRelayOptions(schema, overrides));
  await relay.start();
  return relay;
}

/** Runs `fn` with the relay `starting` gives (see startRelay), and stops it whatever happens. */
export async function withRelay<T>(starting: Promise<Relay>, fn: (relay: Relay) => Promise<T>): Promise<T> {
  const relay = await starting;
  try {
    return await fn(relay);
  } finally {
    await relay.stop();
  }
}

/**
 * Runs a relay until no row of the outbox is pending or failed, then stops it. Returns how
 * many rows it marked sent from checkpoints a former owner committed (`reconciled` events).
 */
export async function drainOutbox(pool: pg.Pool, schema: string, overrides: Partial<RelayOptions> = {}): Promise<number> {
  let reconciled = 0;
  const relay = createRelay(testRelayOptions(schema, overrides));
  relay.events.on('reconciled', (e) => (reconciled += e.marked));
  await withRelay(relay.start().then(() => relay), () => waitAllSent(pool, schema));
  return reconciled;
}

/** Waits until no row is pending or failed. */
export async function waitAllSent(pool: pg.Pool, schema: string, timeoutMs = 60_000): Promise<void> {
  await waitFor(
    async () => {
      const { rows } = await pool.query(`select count(*)::int as n from ${schema}.messages where state <> 'sent'`);
      return rows[0].n === 0;
    },
    { timeoutMs, message: 'all outbox rows sent' },
  );
}

/** Outbox id → how many times it appears in the messages read. */
export function countByOutboxId(messages: Message[]): Map<string, number> {
  const counts = new Map<string, number>();
  for (const m of messages) {
    const id = headerValue(m, 'outbox-id')!;
    counts.set(id, (counts.get(id) ?? 0) + 1);
  }
  return counts;
}

/** Asserts every id appears exactly once and nothing else appears (the first 20 of each kind shown). */
export function expectExactlyOnce(messages: Message[], ids: Iterable<string>): void {
  const report = exactlyOnceReport(countByOutboxId(messages), [...ids].map(String));
  expect({ duplicates: report.duplicates.slice(0, 20), missing: report.missing.slice(0, 20), unexpected: report.unexpected.slice(0, 20) }).toEqual({
    duplicates: [],
    missing: [],
    unexpected: [],
  });
}

/** Asserts that, per key, records appear in increasing outbox id order within one partition. */
/** Reads the topic back (see readTopic) and expects every id in it exactly once, and each key's records in id order; returns what it read. */
export async function expectPublishedOnce(connection: KafkaConnection, topic: string, partitions: number, ids: Iterable<string>, options: ReadOptions): Promise<Message[]> {
  const read = await readTopic(connection, topic, partitions, options);
  expectExactlyOnce(read, ids);
  expectPerKeyOrder(read);
  return read;
}

export function expectPerKeyOrder(messages: Message[]): void {
  const byKey = new Map<string, { partition: number; ids: number[] }>();
  const sorted = [...messages].sort((a, b) => a.partition - b.partition || a.offset - b.offset);
  for (const m of sorted) {
    const key = m.key?.toString();
    if (key === undefined) continue;
    const entry = byKey.get(key) ?? { partition: m.partition, ids: [] };
    expect(m.partition, `key ${key} stays on one partition`).toBe(entry.partition);
    entry.ids.push(Number(headerValue(m, 'outbox-id')));
    byKey.set(key, entry);
  }
  for (const [key, { ids }] of byKey) {
    expect(ids, `records of key ${key} in outbox order`).toEqual([...ids].sort((a, b) => a - b));
  }
}
