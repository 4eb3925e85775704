import { migrate } from '../db/migrate.js';
import { OutboxError } from '../errors.js';
import type { ProducerPreset } from '../kafka/config.js';
import { createLogger, redactUrl } from '../log.js';
import type { Server } from 'node:http';
import { createRelay } from '../relay/relay.js';
import { DEFAULT_HTTP_PORT, parseHttpAddress, serveRelayHttp } from '../relay/http.js';
import { brokersFrom, databaseUrlFrom, integerFlag, parse, schemaFrom, helpAsked } from './args.js';
import { kafkaPropertiesFrom } from './kafka-config.js';

export const RELAY_HELP = `outbox-relay relay [options]

Runs the relay until SIGTERM/SIGINT: the first signal drains (finishes or aborts the
current transaction, releases shards) within --shutdown-timeout-ms; a second one exits at once.

  --database-url URL        PostgreSQL (env DATABASE_URL)
  --brokers LIST            Kafka brokers host:port,... (env KAFKA_BROKERS)
  --kafka-config FILE       librdkafka properties of the relay's Kafka clients (SASL, TLS), one
                            name=value a line (env OUTBOX_KAFKA_CONFIG)
  --schema NAME             outbox schema (env OUTBOX_SCHEMA, default outbox)
  --group NAME              relay group; relays of a group share shards (env OUTBOX_RELAY_GROUP, default outbox-relay)
  --shards N                shards, one transactional id each (env OUTBOX_RELAY_SHARDS, default 4)
  --take-over-from GROUP    serve the outbox as --group, taking it over from GROUP (a new layout):
                            GROUP's relays step down, are fenced and reconciled, then this group serves
  --max-batch-bytes N       bytes of records per Kafka transaction (default 16777216)
  --http ADDR               serve the dashboard (/), /healthz /readyz /metrics and the /api routes on
                            ADDR: a port (loopback), host:port, or off (default 127.0.0.1:9464;
                            taken already → a warning)
  --admin-token TOKEN       bearer token of the mutating HTTP routes (env OUTBOX_ADMIN_TOKEN; none: read-only)
  --playground              the dashboard's "Try it" panel: tries of presets and key designs (as
                            outbox-relay try) on scratch schemas and topics; needs the admin token
  --batch-size N            rows per Kafka transaction (default 500)
  --preset NAME             reliable | throughput | low-latency (default reliable)
  --poll-interval-ms N      safety-net poll (default 1000)
  --lease-ms N              shard lease; take-over time after a crash (default 10000)
  --max-attempts N          attempts before a failing row is dead (default 10)
  --retention-days N        keep sent rows N days (default 7); 0 keeps them forever
  --strict                  refuse to start when topics are missing or can lose data
  --migrate                 apply migrations before starting
  --shutdown-timeout-ms N   drain deadline after the first signal (default 30000)`;

export async function relayCommand(argv: string[]): Promise<number> {
  const { values } = parse(argv, {
    group: { type: 'string' },
    shards: { type: 'string' },
    'take-over-from': { type: 'string' },
    'max-batch-bytes': { type: 'string' },
    http: { type: 'string' },
    'admin-token': { type: 'string' },
    playground: { type: 'boolean' },
    'batch-size': { type: 'string' },
    preset: { type: 'string' },
    'poll-interval-ms': { type: 'string' },
    'lease-ms': { type: 'string' },
    'max-attempts': { type: 'string' },
    'retention-days': { type: 'string' },
    strict: { type: 'boolean' },
    migrate: { type: 'boolean' },
    'shutdown-timeout-ms': { type: 'string' },
  });
  if (helpAsked(values, RELAY_HELP)) return 0;
  const str = (name: string) => values[name] as string | undefined;
  const logger = createLogger();
  const databaseUrl = databaseUrlFrom(values);
  const kafkaProperties = kafkaPropertiesFrom(values);
  const schema = schemaFrom(values);
  const retentionDays = integerFlag('retention-days', str('retention-days'), { min: 0 });
  const shutdownMs = integerFlag('shutdown-timeout-ms', str('shutdown-timeout-ms'), { min: 1 }) ?? 30_000;

  const httpGiven = str('http');
  const http = parseHttpAddress(httpGiven ?? `127.0.0.1:${DEFAULT_HTTP_PORT}`);
  if (values.migrate) await migrate({ db: databaseUrl, schema, logger });
  const relay = createRelay({
    databaseUrl,
    brokers: brokersFrom(values),
    kafka: kafkaProperties ? { properties: kafkaProperties } : undefined,
    schema,
    group: str('group') ?? process.env.OUTBOX_RELAY_GROUP,
    shards: integerFlag('shards', str('shards') ?? process.env.OUTBOX_RELAY_SHARDS, { min: 1 }),
    takeOverFrom: str('take-over-from'),
    batchSize: integerFlag('batch-size', str('batch-size'), { min: 1 }),
    maxBatchBytes: integerFlag('max-batch-bytes', str('max-batch-bytes'), { min: 1 }),
    preset: str('preset') as ProducerPreset | undefined,
    pollIntervalMs: integerFlag('poll-interval-ms', str('poll-interval-ms'), { min: 1 }),
    leaseMs: integerFlag('lease-ms', str('lease-ms'), { min: 1000 }),
    maxAttempts: integerFlag('max-attempts', str('max-attempts'), { min: 1 }),
    retention: retentionDays === 0 ? false : retentionDays === undefined ? undefined : { keepMs: retentionDays * 86_400_000 },
    strict: values.strict === true,
    logger,
  });

  let signals = 0;
  const stopped = new Promise<number>((resolve) => {
    const onSignal = (signal: NodeJS.Signals) => {
      signals += 1;
      if (signals > 1) {
        logger.warn({ signal }, 'second signal: exiting without draining');
        process.exit(130);
      }
      logger.info({ signal, deadlineMs: shutdownMs }, 'draining');
      const deadline = setTimeout(() => {
        logger.error({ deadlineMs: shutdownMs }, 'drain deadline passed: exiting');
        process.exit(1);
      }, shutdownMs);
      deadline.unref();
      void relay.stop().then(() => resolve(0));
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
    // Another group took the outbox over: this relay has stopped and left; nothing to do here.
    relay.events.on('retired', ({ successor }) => {
      logger.warn({ successor }, 'relay group taken over: exiting');
      resolve(0);
    });
  });

  // Served before start(): /healthz answers (and /readyz says why not ready) during a take-over or a reconcile.
  let server: Server | undefined;
  if (http !== 'off') {
    try {
      server = await serveRelayHttp(relay, http, logger, { adminToken: str('admin-token') ?? process.env.OUTBOX_ADMIN_TOKEN, playground: values.playground === true });
    } catch (err) {
      // The default port taken (another relay on this host) is not worth failing for; an address given is.
      if (httpGiven !== undefined) {
        throw new OutboxError('INVALID_ARGUMENT', `--http ${httpGiven}: cannot listen: ${(err as Error).message}`);
      }
      logger.warn({ err, port: http.port }, 'http port taken: serving no /healthz /readyz /metrics (give --http another address, or off)');
    }
  }
  try {
    await relay.start();
  } catch (err) {
    server?.closeAllConnections();
    server?.close();
    throw err instanceof OutboxError ? err : new OutboxError('UNKNOWN', `relay failed to start (${redactUrl(databaseUrl)})`, { cause: err });
  }
  const code = await stopped;
  server?.closeAllConnections();
  await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
  return code;
}
