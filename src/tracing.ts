import type * as Otel from '@opentelemetry/api';

/**
 * OpenTelemetry tracing, when the application has `@opentelemetry/api` installed (an
 * optional peer dependency) and registered a tracer provider; a no-op otherwise.
 *
 * One trace runs from the writer's transaction to the consumer's handler:
 *   - for each row with a `traceparent` (the writer's span, stored with the row) the relay
 *     records a `create` span, child of it, and writes that span's context into the
 *     record's `traceparent` header;
 *   - each Kafka transaction is a `send` span of its own, linked to the rows' traceparents
 *     (a transaction carries rows of many traces, so it can be the child of none), and the
 *     `create` spans link to it; a row without a traceparent gets the `send` span's;
 *   - the consumer runs each handler call in a `process` span whose parent is the record's
 *     `traceparent`, made the active context, so what the handler traces (its SQL) nests
 *     under it; the span ends with the attempt's real outcome.
 * Without a registered provider the API hands out non-recording spans that carry their
 * parent's context: records keep the row's own `traceparent`, as without the API.
 */
export interface Tracing {
  /** The spans of one Kafka transaction of the relay (see above). */
  startTransaction(rows: ReadonlyArray<TracedRow>, attributes: Record<string, string | number>): TransactionSpans;
  /** A span for one handler call on `record`, child of its traceparent. */
  startProcess(record: ProcessedRecord, group: string): ProcessSpan;
}

export interface TracedRow {
  id: string;
  topic: string;
  traceparent: string | null;
}

export interface TransactionSpans {
  /** The traceparent for row `index`'s record; undefined when nothing is recorded and the row has none. */
  traceparentFor(index: number): string | undefined;
  /** Ends every span of the transaction; `error` marks them failed. */
  end(error?: unknown): void;
}

export interface ProcessSpan {
  /** Runs `fn` with the span as the active context. */
  run<T>(fn: () => Promise<T>): Promise<T>;
  /** Ends the span; `error` marks it failed. Ending twice is harmless. */
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

export const NOOP_TRACING: Tracing = {
  startTransaction: (rows) => ({ traceparentFor: (i) => rows[i]?.traceparent ?? undefined, end: () => undefined }),
  startProcess: () => ({ run: (fn) => fn(), end: () => undefined }),
};

/** Links kept per transaction span: the SDK's default span limit; the rest are counted in an attribute. */
const MAX_LINKS = 128;

function remoteContext(traceparent: string | null | undefined): Otel.SpanContext | undefined {
  const fields = parseTraceparent(traceparent);
  return fields ? { ...fields, isRemote: true } : undefined;
}

function endSpan(api: typeof Otel, span: Otel.Span, error: unknown): void {
  if (error !== undefined) {
    const exception = error instanceof Error ? error : new Error(String(error));
    span.recordException(exception);
    span.setStatus({ code: api.SpanStatusCode.ERROR, message: exception.message });
  }
  span.end();
}

function otelTracing(api: typeof Otel): Tracing {
  const tracer = () => api.trace.getTracer(TRACER_NAME);
  // No tracer provider registered (the API is there, the SDK is not): spans would record
  // nothing, and their attributes would still be built per record. Asked per call, since an
  // application may register its provider after the relay or consumer started.
  const noProvider = new api.ProxyTracerProvider().getDelegate();
  const live = (): boolean => {
    const provider = api.trace.getTracerProvider();
    return !(provider instanceof api.ProxyTracerProvider) || provider.getDelegate() !== noProvider;
  };
  const format = (span: Otel.Span) => {
    const context = span.spanContext();
    return api.trace.isSpanContextValid(context) ? formatTraceparent(context) : undefined;
  };
  const messaging = (operation: 'create' | 'send' | 'process', topic: string | undefined) => ({
    'messaging.system': 'kafka',
    'messaging.operation.type': operation,
    'messaging.operation.name': operation,
    ...(topic !== undefined ? { 'messaging.destination.name': topic } : {}),
  });
  return {
    startTransaction(rows, attributes) {
      if (!live()) return NOOP_TRACING.startTransaction(rows, attributes);
      const contexts = rows.map((row) => remoteContext(row.traceparent));
      const links = contexts.filter((c): c is Otel.SpanContext => c !== undefined).map((context) => ({ context }));
      const topics = [...new Set(rows.map((r) => r.topic))];
      const topic = topics.length === 1 ? topics[0] : undefined;
      const send = tracer().startSpan(
        topic !== undefined ? `send ${topic}` : 'send',
        {
          kind: api.SpanKind.PRODUCER,
          root: true,
          links: links.slice(0, MAX_LINKS),
          attributes: {
            ...messaging('send', topic),
            'messaging.batch.message_count': rows.length,
            ...(links.length > MAX_LINKS ? { 'outbox.links_dropped': links.length - MAX_LINKS } : {}),
            ...attributes,
          },
        },
        api.ROOT_CONTEXT,
      );
      const sendTraceparent = format(send);
      const creates = rows.map((row, i) => {
        const parent = contexts[i];
        if (!parent) return undefined;
        return tracer().startSpan(
          `create ${row.topic}`,
          {
            kind: api.SpanKind.PRODUCER,
            links: [{ context: send.spanContext() }],
            attributes: { ...messaging('create', row.topic), 'messaging.message.id': row.id },
          },
          api.trace.setSpanContext(api.ROOT_CONTEXT, parent),
        );
      });
      return {
        traceparentFor: (i) => {
          const create = creates[i];
          return (create ? format(create) : undefined) ?? sendTraceparent ?? rows[i]?.traceparent ?? undefined;
        },
        end(error) {
          for (const create of creates) if (create) endSpan(api, create, error);
          endSpan(api, send, error);
        },
      };
    },
    startProcess(record, group) {
      if (!live()) return NOOP_TRACING.startProcess(record, group);
      const parent = remoteContext(record.headers.traceparent);
      const parentContext = parent ? api.trace.setSpanContext(api.ROOT_CONTEXT, parent) : api.ROOT_CONTEXT;
      const span = tracer().startSpan(
        `process ${record.topic}`,
        {
          kind: api.SpanKind.CONSUMER,
          attributes: {
            ...messaging('process', record.topic),
            'messaging.destination.partition.id': String(record.partition),
            'messaging.kafka.offset': record.offset,
            'messaging.consumer.group.name': group,
            ...(record.headers.outboxId !== undefined ? { 'messaging.message.id': record.headers.outboxId } : {}),
          },
        },
        parentContext,
      );
      const active = api.trace.setSpan(parentContext, span);
      let ended = false;
      return {
        run: (fn) => api.context.with(active, fn),
        end(error) {
          if (ended) return;
          ended = true;
          endSpan(api, span, error);
        },
      };
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
