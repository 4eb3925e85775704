import { context, trace, SpanKind, SpanStatusCode, type SpanContext } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor, type ReadableSpan } from '@opentelemetry/sdk-trace-base';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { enqueue } from '../../src/outbox/enqueue.js';
import { formatTraceparent, parseTraceparent } from '../../src/tracing.js';
import { effectHandler, effectTotal, testConsumer } from '../support/consumer.js';
import { inTransaction } from '../support/db.js';
import { headerValue, kafkaConnection, readTopic } from '../support/kafka.js';
import { drainOutbox } from '../support/relay.js';
import { useTestServices } from '../support/services.js';
import { waitFor } from '../support/wait.js';

describe('traceparent helpers', () => {
  it('a traceparent round-trips, and malformed or all-zero ones are refused', () => {
    const value = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';
    expect(formatTraceparent(parseTraceparent(value)!)).toBe(value);
    for (const bad of [
      '',
      'garbage',
      '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7',
      `00-${'0'.repeat(32)}-00f067aa0ba902b7-01`,
      `00-4bf92f3577b34da6a3ce929d0e0e4736-${'0'.repeat(16)}-01`,
      'ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01',
      '00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01',
    ]) {
      expect(parseTraceparent(bad), bad).toBeUndefined();
    }
  });
});

describe('tracing: one trace from the writer through Kafka into the handler', () => {
  const { pool, freshEffects, freshOutbox } = useTestServices({ poolSize: 8 });
  const exporter = new InMemorySpanExporter();
  const contextManager = new AsyncLocalStorageContextManager();

  beforeAll(() => {
    contextManager.enable();
    context.setGlobalContextManager(contextManager);
    trace.setGlobalTracerProvider(new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] }));
  });
  afterAll(() => {
    trace.disable();
    context.disable();
  });

  const same = (a: SpanContext | undefined, b: SpanContext | undefined) => a?.traceId === b?.traceId && a?.spanId === b?.spanId;

  const ofTopic = (topic: string, kind: SpanKind, name?: string) =>
    exporter.getFinishedSpans().filter((s) => s.kind === kind && s.attributes['messaging.destination.name'] === topic && (name === undefined || s.name.startsWith(name)));
  const tracer = trace.getTracer('order-service');
  const writerSpan = (name: string) => {
    const span = tracer.startSpan(name);
    span.end();
    return span.spanContext();
  };

  it("one trace runs from the writer's span through the relay's create span into the handler's process span and what the handler traces", async () => {
    const { schema, topic } = await freshEffects(2);
    // Three orders, each written in a span of the order service; a fourth row has no trace.
    const writers = [1, 2, 3].map((i) => writerSpan(`place order ${i}`));
    const ids = await inTransaction(pool, (client) =>
      enqueue(
        client,
        [
          ...writers.map((w, i) => ({ topic, key: `order-${i}`, payload: `order-${i}`, traceparent: formatTraceparent(w) })),
          { topic, key: 'untraced', payload: 'untraced' },
        ],
        { schema },
      ),
    );
    await drainOutbox(pool, schema);

    const sends = ofTopic(topic, SpanKind.PRODUCER, 'send');
    const creates = ofTopic(topic, SpanKind.PRODUCER, 'create');
    expect(sends.length).toBeGreaterThan(0);
    for (const send of sends) {
      expect(send.parentSpanContext).toBeUndefined();
      expect(send.attributes['messaging.system']).toBe('kafka');
      expect(send.status.code).toBe(SpanStatusCode.UNSET);
    }
    // Each writer span has a create span as its child, linked to its transaction's send
    // span, and the send span links back to the writer.
    expect(creates).toHaveLength(writers.length);
    for (const [i, writer] of writers.entries()) {
      const create = creates.find((c) => c.parentSpanContext?.spanId === writer.spanId);
      expect(create, `create span of order ${i + 1}`).toBeDefined();
      expect(create!.spanContext().traceId).toBe(writer.traceId);
      expect(create!.attributes['messaging.message.id']).toBe(ids[i]);
      const send = sends.find((p) => same(p.spanContext(), create!.links[0]?.context));
      expect(send, `send span of order ${i + 1}`).toBeDefined();
      expect(send!.links.some((l) => same(l.context, writer))).toBe(true);
    }

    // A traced row's record carries its create span; the untraced row's, its send span.
    const records = await readTopic(kafkaConnection(), topic, 2, { expected: ids.length });
    expect(records).toHaveLength(ids.length);
    for (const record of records) {
      const header = parseTraceparent(headerValue(record, 'traceparent'));
      expect(header, String(record.key)).toBeDefined();
      const carrier = String(record.key) === 'untraced' ? sends : creates;
      expect(carrier.some((p) => same(p.spanContext(), { ...header!, isRemote: true })), String(record.key)).toBe(true);
    }

    // The handler runs in a span whose parent is the record's traceparent; what the handler
    // traces itself nests under that span.
    const handler = effectHandler(schema);
    const consumer = testConsumer({
      schema,
      topics: [topic],
      handler: async (record, tx) => {
        await tracer.startActiveSpan('ledger write', async (span) => {
          try {
            await handler(record, tx);
          } finally {
            span.end();
          }
        });
      },
    });
    await consumer.start();
    try {
      await waitFor(async () => (await effectTotal(pool, schema)) >= ids.length, { timeoutMs: 30_000, message: 'every record applied' });
    } finally {
      await consumer.stop();
    }
    const processes = ofTopic(topic, SpanKind.CONSUMER);
    for (const record of records) {
      const header = parseTraceparent(headerValue(record, 'traceparent'))!;
      const at = processes.filter((s) => s.attributes['messaging.kafka.offset'] === Number(record.offset) && s.attributes['messaging.destination.partition.id'] === String(record.partition));
      expect(at, `process span of ${String(record.key)}`).toHaveLength(1);
      const process = at[0]!;
      expect(process.name).toBe(`process ${topic}`);
      expect(process.parentSpanContext?.spanId).toBe(header.spanId);
      expect(process.spanContext().traceId).toBe(header.traceId);
      const ledger = exporter.getFinishedSpans().find((s: ReadableSpan) => s.name === 'ledger write' && s.parentSpanContext?.spanId === process.spanContext().spanId);
      expect(ledger, `ledger span under ${String(record.key)}`).toBeDefined();
    }
    // The writers' traces are the ones the ledger writes are in.
    for (const writer of writers) {
      expect(processes.some((p) => p.spanContext().traceId === writer.traceId)).toBe(true);
    }
  });

  it("a transaction of more rows than a span may link still puts every row's record in its writer's trace, and counts the links left out", async () => {
    const { schema, topic } = await freshOutbox(1);
    const writers = Array.from({ length: 200 }, (_, i) => writerSpan(`order ${i}`));
    await inTransaction(pool, (client) =>
      enqueue(client, writers.map((w, i) => ({ topic, key: `k${i % 10}`, payload: String(i), traceparent: formatTraceparent(w) })), { schema }),
    );
    await drainOutbox(pool, schema, { shards: 1 });
    const sends = ofTopic(topic, SpanKind.PRODUCER, 'send');
    const rows = sends.reduce((n, s) => n + Number(s.attributes['messaging.batch.message_count']), 0);
    expect(rows).toBe(200);
    const big = sends.find((s) => Number(s.attributes['messaging.batch.message_count']) > 128);
    expect(big, 'one transaction over 128 rows').toBeDefined();
    expect(big!.links).toHaveLength(128);
    expect(big!.attributes['outbox.links_dropped']).toBe(Number(big!.attributes['messaging.batch.message_count']) - 128);
    const creates = ofTopic(topic, SpanKind.PRODUCER, 'create');
    expect(new Set(creates.map((c) => c.spanContext().traceId))).toEqual(new Set(writers.map((w) => w.traceId)));
  });

  it("a handler's failure and a handler's overrun end its span as failed, at once, and the effect is applied once on the retry", async () => {
    const { schema, topic } = await freshEffects(1);
    await inTransaction(pool, (client) => enqueue(client, [{ topic, key: 'k', payload: 'flaky' }], { schema }));
    await drainOutbox(pool, schema);
    let calls = 0;
    let release!: () => void;
    const hung = new Promise<void>((resolve) => (release = resolve));
    const handler = effectHandler(schema);
    const consumer = testConsumer({
      schema,
      topics: [topic],
      retryMinDelayMs: 10,
      retryMaxDelayMs: 20,
      handlerTimeoutMs: 1_000,
      handler: async (record, tx) => {
        calls += 1;
        if (calls === 1) throw new Error('ledger unavailable');
        if (calls === 2) return hung; // overruns handlerTimeoutMs; settles only at the end
        await handler(record, tx);
      },
    });
    await consumer.start();
    try {
      await waitFor(async () => (await effectTotal(pool, schema)) >= 1, { timeoutMs: 30_000, message: 'the record applied' });
      // The overrun's span ended while its handler still hangs.
      const processes = ofTopic(topic, SpanKind.CONSUMER);
      expect(processes.map((s) => s.status.code)).toEqual([SpanStatusCode.ERROR, SpanStatusCode.ERROR, SpanStatusCode.UNSET]);
      expect(processes[0]!.status.message).toBe('ledger unavailable');
      expect(processes[1]!.status.message).toMatch(/handlerTimeoutMs/);
      expect(processes[0]!.events.some((e) => e.name === 'exception')).toBe(true);
    } finally {
      release();
      await consumer.stop();
    }
    expect(await effectTotal(pool, schema)).toBe(1);
  });
});
