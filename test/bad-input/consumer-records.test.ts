/**
 * The bad-input corpus (test/bad-input/), consumer records: what this entry point must refuse, each
 * case checking (a) the refusal is typed (an OutboxError code, a SQLSTATE and constraint, a
 * CLI exit code 2 with its message, an HTTP status with a JSON error) or the row/record is
 * parked with its reason, and (b) nothing is lost: the refused write changed nothing, and
 * good input through the same entry point still flows, end to end.
 */
import type { MessageHeader } from '@confluentinc/kafka-javascript';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Consumer, RecordHandler } from '../../src/consumer/index.js';
import { TransactionalProducer } from '../../src/kafka/producer.js';
import { HEADER } from '../../src/outbox/event.js';
import { freshSchema } from '../support/db.js';
import { freshTopic } from '../support/kafka.js';
import { useTestServices } from '../support/services.js';
import { uniqueName, waitFor } from '../support/wait.js';
import { testConsumer } from '../support/consumer.js';
import { badInputChecks } from '../support/bad-input.js';

const services = useTestServices({ poolSize: 8 });
const { connection, pool, admin, consumers } = services;
const { count } = badInputChecks(services);

// ---------------------------------------------------------------------------------------
// consumer records
// ---------------------------------------------------------------------------------------

interface RawRecord {
  value: Buffer | null;
  headers: MessageHeader[];
}

interface RecordCase {
  name: string;
  record: (orderId: string) => RawRecord;
  outcome: 'dead-lettered' | 'applied' | 'skipped';
  error?: RegExp;
}

const SOURCE = 'orders-db';
/** Headers as the relay writes them, with `extra` appended (a copy of a reserved name comes after the relay's, as older relays wrote them). */
const relayHeaders = (id: string, over: Record<string, string> = {}, extra: MessageHeader[] = []): MessageHeader[] => [
  ...Object.entries({ [HEADER.outboxId]: id, [HEADER.source]: SOURCE, [HEADER.eventType]: 'order.paid', [HEADER.schemaVersion]: '1', ...over }).map(([k, v]) => ({ [k]: Buffer.from(v) })),
  ...extra,
];
const order = (orderId: string, amount = '10.00') => Buffer.from(JSON.stringify({ orderId, amount }));
/** The outbox id of the first good record: forged cases reuse it. */
const FIRST_ID = '1';

const RECORD_CASES: RecordCase[] = [
  { name: 'a value that is not JSON', record: () => ({ value: Buffer.from('{"orderId": '), headers: relayHeaders('9001') }), outcome: 'dead-lettered', error: /value is not JSON/ },
  { name: 'a JSON value of the wrong shape', record: (id) => ({ value: Buffer.from(JSON.stringify({ orderId: id, amount: 10 })), headers: relayHeaders('9002') }), outcome: 'dead-lettered', error: /orderId and amount \(a decimal string\) are required/ },
  { name: 'an unsupported schema-version header', record: (id) => ({ value: order(id), headers: relayHeaders('9003', { [HEADER.schemaVersion]: '2' }) }), outcome: 'dead-lettered', error: /schema-version "2" is not supported/ },
  { name: 'a schema-version header that is not a number', record: (id) => ({ value: order(id), headers: relayHeaders('9004', { [HEADER.schemaVersion]: 'v1' }) }), outcome: 'dead-lettered', error: /schema-version "v1" is not supported/ },
  { name: 'a huge record (900 KB) the handler cannot parse', record: () => ({ value: Buffer.alloc(900_000, 'x'), headers: relayHeaders('9005') }), outcome: 'dead-lettered', error: /value is not JSON/ },
  { name: 'no outbox-id or outbox-source header (another producer)', record: (id) => ({ value: order(id), headers: relayHeaders('unused').filter((h) => !(HEADER.outboxId in h) && !(HEADER.source in h)) }), outcome: 'applied' },
  { name: 'an outbox-id of an applied record without outbox-source', record: (id) => ({ value: order(id), headers: relayHeaders(FIRST_ID).filter((h) => !(HEADER.source in h)) }), outcome: 'applied' },
  { name: 'the outbox-id of an applied record from another source', record: (id) => ({ value: order(id), headers: relayHeaders(FIRST_ID, { [HEADER.source]: 'billing-db' }) }), outcome: 'applied' },
  { name: 'a forged copy of an applied record identity appended after the relay headers', record: (id) => ({ value: order(id), headers: relayHeaders('9009', {}, [{ [HEADER.outboxId]: Buffer.from(FIRST_ID) }]) }), outcome: 'applied' },
  { name: 'the same (source, outbox-id) as an applied record (a re-publish)', record: (id) => ({ value: order(id), headers: relayHeaders(FIRST_ID) }), outcome: 'skipped' },
  { name: 'a tombstone (null value)', record: () => ({ value: null, headers: relayHeaders('9011') }), outcome: 'skipped' },
  { name: 'no headers at all', record: (id) => ({ value: order(id), headers: [] }), outcome: 'skipped' },
];

describe('consumer records: bad ones are dead-lettered with their reason or passed over as documented, and the records around them are applied', () => {
  let schema: string;
  let topic: string;
  let consumer: Consumer;
  const groupId = uniqueName('g');
  /** Offset of each case's record and of the good record right after it. */
  const offsets = new Map<string, { bad: number; next: number }>();
  const goods: string[] = [];

  /**
   * The application's handler, as the README writes one: a tombstone or another event type
   * is not ours (the offset moves on); anything it cannot book throws, and is retried, then
   * dead-lettered with the error.
   */
  const handler: RecordHandler = async (record, tx) => {
    if (record.value === null || record.headers.eventType !== 'order.paid') return;
    if (record.headers.schemaVersion !== 1) throw new Error(`schema-version ${JSON.stringify(record.headers.raw[HEADER.schemaVersion])} is not supported`);
    let event: { orderId?: unknown; amount?: unknown };
    try {
      event = JSON.parse(record.value.toString('utf8')) as typeof event;
    } catch (err) {
      throw new Error(`value is not JSON: ${(err as Error).message.slice(0, 100)}`);
    }
    if (typeof event.orderId !== 'string' || typeof event.amount !== 'string' || !/^\d+\.\d{2}$/.test(event.amount)) {
      throw new Error('value is not an order.paid event: orderId and amount (a decimal string) are required');
    }
    await tx.query(`insert into "${schema}".ledger (order_id, amount, outbox_id, source, "offset") values ($1::text, $2::numeric, $3::text, $4::text, $5::bigint)`, [
      event.orderId,
      event.amount,
      record.headers.outboxId ?? null,
      record.headers.source ?? null,
      record.offset,
    ]);
  };

  beforeAll(async () => {
    schema = await freshSchema(pool);
    topic = await freshTopic(admin, 1);
    await pool.query(`create table "${schema}".ledger (id bigserial primary key, order_id text not null, amount numeric(12,2) not null, outbox_id text, source text, "offset" bigint not null)`);
    // Good records (relay-like, ids from 1) around every bad one, in one Kafka transaction.
    const records: RawRecord[] = [];
    const good = () => {
      const id = String(goods.length + 1);
      goods.push(`good-${id}`);
      records.push({ value: order(`good-${id}`), headers: relayHeaders(id) });
    };
    good();
    for (const c of RECORD_CASES) {
      records.push(c.record(`case-${RECORD_CASES.indexOf(c)}`));
      good();
    }
    const producer = new TransactionalProducer({ connection, transactionalId: uniqueName('bad-input-producer'), preset: 'low-latency' });
    try {
      await producer.connect();
      await producer.init(30_000);
      await producer.begin();
      const delivered = await Promise.all(records.map((r, i) => producer.produce({ topic, partition: 0, key: `r${i}`, value: r.value, headers: r.headers })));
      await producer.commit(30_000);
      for (const [i, c] of RECORD_CASES.entries()) offsets.set(c.name, { bad: delivered[1 + 2 * i]!.offset, next: delivered[2 + 2 * i]!.offset });
    } finally {
      await producer.disconnect();
    }
    const last = Math.max(...[...offsets.values()].map((o) => o.next));
    consumer = testConsumer({ schema, groupId, topics: [topic], maxAttempts: 2, handler });
    consumers.push(consumer);
    await consumer.start();
    await waitFor(async () => Number((await pool.query(`select next_offset from "${schema}".consumer_offsets where group_id = $1`, [groupId])).rows[0]?.next_offset ?? -1) > last, {
      timeoutMs: 45_000,
      message: 'the consumer past the last record',
    });
  });
  afterAll(async () => {
    await consumer?.stop();
  });

  it.each(RECORD_CASES)('a record with $name is $outcome, and the record after it is applied', async (c) => {
    const { bad, next } = offsets.get(c.name)!;
    const orderId = `case-${RECORD_CASES.indexOf(c)}`;
    const applied = await pool.query(`select order_id, outbox_id, source from "${schema}".ledger where "offset" = any($1::bigint[]) order by "offset"`, [[bad, next]]);
    const letters = await pool.query<{ error: string; attempts: number; bytes: number | null }>(
      `select error, attempts, octet_length(value) as bytes from "${schema}".dead_letters where group_id = $1 and "offset" = $2`,
      [groupId, bad],
    );
    const after = applied.rows.filter((r) => r.order_id.startsWith('good-'));
    expect(after).toHaveLength(1);
    if (c.outcome === 'dead-lettered') {
      expect(letters.rows).toHaveLength(1);
      expect(letters.rows[0]!.error).toMatch(c.error!);
      expect(letters.rows[0]!.attempts).toBe(2);
      expect(letters.rows[0]!.bytes).toBe(c.record(orderId).value?.length ?? null);
    } else {
      expect(letters.rows).toEqual([]);
    }
    expect(applied.rows.filter((r) => r.order_id === orderId)).toHaveLength(c.outcome === 'applied' ? 1 : 0);
  });

  it('every good record is applied exactly once, in offset order; only the dead-lettered cases have dead letters; identities stay per source', async () => {
    const { rows } = await pool.query<{ order_id: string }>(`select order_id from "${schema}".ledger where order_id like 'good-%' order by "offset"`);
    expect(rows.map((r) => r.order_id)).toEqual(goods);
    expect(await count(`"${schema}".dead_letters where group_id = $1`, [groupId])).toBe(RECORD_CASES.filter((c) => c.outcome === 'dead-lettered').length);
    // The forged copy counted as outbox id 9009 (the relay's own header, first), not as the applied id 1.
    const forged = await pool.query(`select outbox_id, source from "${schema}".ledger where order_id = $1`, [`case-${RECORD_CASES.findIndex((c) => c.name.startsWith('a forged copy'))}`]);
    expect(forged.rows).toEqual([{ outbox_id: '9009', source: SOURCE }]);
    const inbox = await pool.query(`select source, outbox_id from "${schema}".consumer_inbox where group_id = $1 and outbox_id = $2 order by source`, [groupId, FIRST_ID]);
    expect(inbox.rows).toEqual([{ source: 'billing-db', outbox_id: FIRST_ID }, { source: SOURCE, outbox_id: FIRST_ID }]);
  });
});
