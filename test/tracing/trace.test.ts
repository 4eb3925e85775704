import { context, trace, SpanKind, SpanStatusCode, type SpanContext } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor, type ReadableSpan } from '@opentelemetry/sdk-trace-base';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { enqueue } from '../../src/outbox/enqueue.js';
import { formatTraceparent, parseTraceparent } from '../../src/tracing.js';
import { createEffectsTable, effectHandler, effectTotal, testConsumer } from '../consumer/harness.js';
import { freshSchema, inTransaction } from '../helpers/db.js';
import { freshTopic, headerValue, kafkaConnection, readTopic } from '../helpers/kafka.js';
import { drainOutbox } from '../helpers/relay.js';
import { useTestServices } from '../helpers/services.js';
import { waitFor } from '../helpers/wait.js';

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
  const { pool, admin } = useTestServices({ poolSize: 8 });
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

  it("the relay's transaction span links each row's traceparent, the record carries that span, and the handler runs in its child span", async () => {
    const schema = await freshSchema(pool);
    await createEffectsTable(pool, schema);
    const topic = await freshTopic(admin, 2);
    const tracer = trace.getTracer('order-service');
    // Three orders, each written in a span of the order service; a fourth row has no trace.
    const writerSpans = [1, 2, 3].map((i) => tracer.startSpan(`place order ${i}`));
    const traceparents = writerSpans.map((s) => formatTraceparent(s.spanContext()));
    writerSpans.forEach((s) => s.end());
    const ids = await inTransaction(pool, (client) =>
      enqueue(
        client,
        [
          ...traceparents.map((tp, i) => ({ topic, key: `order-${i}`, payload: `order-${i}`, traceparent: tp })),
          { topic, key: 'untraced', payload: 'untraced' },
        ],
        { schema },
      ),
    );
    await drainOutbox(pool, schema);

    const spans = () => exporter.getFinishedSpans();
    const publishSpans = spans().filter((s) => s.kind === SpanKind.PRODUCER && s.instrumentationScope.name === 'outbox-relay');
    expect(publishSpans.length).toBeGreaterThan(0);
    // Every writer span is linked from the span of the transaction that carried its row.
    for (const [i, writer] of writerSpans.entries()) {
      expect(publishSpans.some((p) => p.links.some((l) => same(l.context, writer.spanContext()))), `order ${i + 1}`).toBe(true);
    }
    for (const p of publishSpans) {
      expect(p.parentSpanContext).toBeUndefined();
      expect(p.attributes['messaging.system']).toBe('kafka');
      expect(p.attributes['messaging.destination.name']).toBe(topic);
      expect(p.status.code).not.toBe(SpanStatusCode.ERROR);
    }

    // Each record's traceparent is its transaction's span, the untraced row's included.
    const records = await readTopic(kafkaConnection(), topic, 2, { expected: ids.length });
    expect(records).toHaveLength(ids.length);
    for (const record of records) {
      const header = parseTraceparent(headerValue(record, 'traceparent'));
      expect(header, String(record.key)).toBeDefined();
      expect(publishSpans.some((p) => same(p.spanContext(), { ...header!, isRemote: true }))).toBe(true);
    }

    // The consumer's handler runs in a span whose parent is the record's traceparent; what
    // the handler traces itself nests under that span.
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
    const processSpans = spans().filter((s) => s.kind === SpanKind.CONSUMER);
    expect(processSpans).toHaveLength(ids.length);
    for (const record of records) {
      const header = parseTraceparent(headerValue(record, 'traceparent'))!;
      const process = processSpans.find((s) => s.attributes['messaging.kafka.offset'] === Number(record.offset) && s.attributes['messaging.destination.partition.id'] === String(record.partition));
      expect(process, `process span of ${String(record.key)}`).toBeDefined();
      expect(process!.name).toBe(`process ${topic}`);
      expect(process!.parentSpanContext?.spanId).toBe(header.spanId);
      expect(process!.spanContext().traceId).toBe(header.traceId);
      const ledger = spans().find((s: ReadableSpan) => s.name === 'ledger write' && s.parentSpanContext?.spanId === process!.spanContext().spanId);
      expect(ledger, `ledger span under ${String(record.key)}`).toBeDefined();
    }
  });

  it("a handler's failure is recorded on its span, and the record's effect is applied once on the retry", async () => {
    const schema = await freshSchema(pool);
    await createEffectsTable(pool, schema);
    const topic = await freshTopic(admin, 1);
    await inTransaction(pool, (client) => enqueue(client, [{ topic, key: 'k', payload: 'flaky' }], { schema }));
    await drainOutbox(pool, schema);
    let calls = 0;
    const handler = effectHandler(schema);
    const consumer = testConsumer({
      schema,
      topics: [topic],
      retryMinDelayMs: 10,
      retryMaxDelayMs: 20,
      handler: async (record, tx) => {
        if (++calls === 1) throw new Error('ledger unavailable');
        await handler(record, tx);
      },
    });
    await consumer.start();
    try {
      await waitFor(async () => (await effectTotal(pool, schema)) >= 1, { timeoutMs: 30_000, message: 'the record applied' });
    } finally {
      await consumer.stop();
    }
    expect(await effectTotal(pool, schema)).toBe(1);
    const processSpans = exporter.getFinishedSpans().filter((s) => s.kind === SpanKind.CONSUMER && s.attributes['messaging.destination.name'] === topic);
    expect(processSpans.map((s) => s.status.code)).toEqual([SpanStatusCode.ERROR, SpanStatusCode.UNSET]);
    expect(processSpans[0]!.events.some((e) => e.name === 'exception')).toBe(true);
  });
});
