import type * as Otel from '@opentelemetry/api';

/**
 * OpenTelemetry tracing, when the application has `@opentelemetry/api` installed (an
 * optional peer dependency) and registered a tracer provider; a no-op otherwise.
 *
 * One trace runs from the writer's transaction to the consumer's handler:
 *   - the row's `traceparent` (the writer's span, stored with the row) is linked from the
 *     relay's span of the Kafka transaction that carries the row: one span per transaction,
 *     with one link per row, since a transaction carries rows of many traces;
 *   - that span's context is written into the record's `traceparent` header;
 *   - the consumer runs the handler in a span whose parent is the record's `traceparent`,
 *     made the active context, so what the handler traces (its SQL) nests under it.
 * Without a registered provider the API hands out non-recording spans with no valid
 * context: the record then keeps the row's own `traceparent`, as without the API.
 */
export interface Tracing {
  /** A span for one Kafka transaction of the relay, linked to each row's traceparent. */
  startPublish(rows: ReadonlyArray<{ topic: string; traceparent: string | null }>, attributes: Record<string, string | number>): PublishSpan;
  /** Runs `fn` as the active span of processing `record`, child of its traceparent. */
  inProcessSpan<T>(record: ProcessedRecord, group: string, fn: () => Promise<T>): Promise<T>;
}

export interface PublishSpan {
  /** The span's context as a W3C traceparent, to put on the records; undefined when nothing is recorded. */
  readonly traceparent: string | undefined;
  /** Ends the span; `error` marks it failed. */
  end(error?: unknown): void;
}

/** What a process span needs of a consumed record. */
export interface ProcessedRecord {
  topic: string;
  partition: number;
  offset: number;
  headers: { outboxId: string | undefined; traceparent: string | undefined };
}

const TRACER_NAME = 'outbox-relay';
const TRACEPARENT_RE = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;
const ZERO_TRACE = '0'.repeat(32);
const ZERO_SPAN = '0'.repeat(16);

/** A W3C traceparent's fields; undefined for a malformed one or all-zero ids (invalid by the spec). */
export function parseTraceparent(value: string | null | undefined): { traceId: string; spanId: string; traceFlags: number } | undefined {
  if (!value) return undefined;
  const m = TRACEPARENT_RE.exec(value.trim());
  if (!m || m[1] === 'ff' || m[2] === ZERO_TRACE || m[3] === ZERO_SPAN) return undefined;
  return { traceId: m[2]!, spanId: m[3]!, traceFlags: Number.parseInt(m[4]!, 16) };
}

/** A span context as a version-00 W3C traceparent. */
export function formatTraceparent(context: { traceId: string; spanId: string; traceFlags: number }): string {
  return `00-${context.traceId}-${context.spanId}-${(context.traceFlags & 0xff).toString(16).padStart(2, '0')}`;
}

const NOOP_SPAN: PublishSpan = { traceparent: undefined, end: () => undefined };

export const NOOP_TRACING: Tracing = {
  startPublish: () => NOOP_SPAN,
  inProcessSpan: (_record, _group, fn) => fn(),
};

function remoteContext(traceparent: string | null | undefined): Otel.SpanContext | undefined {
  const fields = parseTraceparent(traceparent);
  return fields ? { ...fields, isRemote: true } : undefined;
}

function markFailed(api: typeof Otel, span: Otel.Span, error: unknown): void {
  const exception = error instanceof Error ? error : new Error(String(error));
  span.recordException(exception);
  span.setStatus({ code: api.SpanStatusCode.ERROR, message: exception.message });
}

function otelTracing(api: typeof Otel): Tracing {
  const tracer = () => api.trace.getTracer(TRACER_NAME);
  return {
    startPublish(rows, attributes) {
      const links: Otel.Link[] = [];
      for (const row of rows) {
        const context = remoteContext(row.traceparent);
        if (context) links.push({ context });
      }
      const topics = [...new Set(rows.map((r) => r.topic))];
      // A root span: the transaction belongs to no single writer's trace; links tie it to all.
      const span = tracer().startSpan(
        topics.length === 1 ? `send ${topics[0]}` : 'send',
        {
          kind: api.SpanKind.PRODUCER,
          root: true,
          links,
          attributes: {
            'messaging.system': 'kafka',
            'messaging.operation.type': 'send',
            'messaging.operation.name': 'send',
            'messaging.batch.message_count': rows.length,
            ...(topics.length === 1 ? { 'messaging.destination.name': topics[0] } : {}),
            ...attributes,
          },
        },
        api.ROOT_CONTEXT,
      );
      const context = span.spanContext();
      return {
        traceparent: api.trace.isSpanContextValid(context) ? formatTraceparent(context) : undefined,
        end(error) {
          if (error !== undefined) markFailed(api, span, error);
          span.end();
        },
      };
    },
    async inProcessSpan(record, group, fn) {
      const parent = remoteContext(record.headers.traceparent);
      const parentContext = parent ? api.trace.setSpanContext(api.ROOT_CONTEXT, parent) : api.ROOT_CONTEXT;
      const span = tracer().startSpan(
        `process ${record.topic}`,
        {
          kind: api.SpanKind.CONSUMER,
          attributes: {
            'messaging.system': 'kafka',
            'messaging.operation.type': 'process',
            'messaging.operation.name': 'process',
            'messaging.destination.name': record.topic,
            'messaging.destination.partition.id': String(record.partition),
            'messaging.kafka.offset': record.offset,
            'messaging.consumer.group.name': group,
            ...(record.headers.outboxId !== undefined ? { 'messaging.message.id': record.headers.outboxId } : {}),
          },
        },
        parentContext,
      );
      try {
        return await api.context.with(api.trace.setSpan(parentContext, span), fn);
      } catch (err) {
        markFailed(api, span, err);
        throw err;
      } finally {
        span.end();
      }
    },
  };
}

let loading: Promise<Tracing> | undefined;

/** The tracing in effect: OpenTelemetry when `@opentelemetry/api` can be imported, else {@link NOOP_TRACING}. */
export function loadTracing(): Promise<Tracing> {
  loading ??= import('@opentelemetry/api').then(
    // The API is CommonJS: its names are on the namespace, or on `default` where they were not detected.
    (mod) => otelTracing(('trace' in mod ? mod : (mod as { default: unknown }).default) as typeof Otel),
    () => NOOP_TRACING,
  );
  return loading;
}
