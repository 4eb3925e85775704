import { execFile } from 'node:child_process';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { inspect, promisify } from 'node:util';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from 'vitest';
import { createConsumer, type Consumer } from '../../src/consumer/index.js';
import { describeError } from '../../src/errors.js';
import { KafkaAdmin } from '../../src/kafka/admin.js';
import type { KafkaProperties } from '../../src/kafka/config.js';
import { createLogger } from '../../src/log.js';
import { serveRelayHttp } from '../../src/relay/http.js';
import type { RelayOptions } from '../../src/relay/options.js';
import { createRelay, type Relay } from '../../src/relay/relay.js';
import { OwnBroker } from '../support/broker.js';
import { spawnTracked } from '../support/children.js';
import { readTopic } from '../support/kafka.js';
import { OwnPostgres } from '../support/postgres.js';
import { expectExactlyOnce } from '../support/relay.js';
import { waitFor, within } from '../support/wait.js';

// Distinctive secrets, every one with "Pa55" in it: a leak in any form (whole, cut,
// percent-encoded) shows. The PostgreSQL ones need percent-encoding in a URL.
const PG_PASSWORD = 'pg-Pa55:w/rd@7x%Q';
const PG_WRONG = 'pg-Wr0ng-Pa55/@x';
const RELAY_SASL = 'sasl-Pa55-relay-K9v';
const CONSUMER_SASL = 'sasl-Pa55-consumer-J3w';
const SASL_WRONG = 'sasl-Wr0ng-Pa55-Z1';
const SECRETS = [PG_PASSWORD, PG_WRONG, RELAY_SASL, CONSUMER_SASL, SASL_WRONG];

const root = fileURLToPath(new URL('../..', import.meta.url));
const runFile = promisify(execFile);
const SCHEMA = 'outbox';
const GROUP = 'credentials';
const TOPIC = 'orders';
const RELAY_HTTP = 19694;
const CLI_HTTP = 19695;

const broker = new OwnBroker(19692, 19693, { saslUsers: { relay: RELAY_SASL, consumer: CONSUMER_SASL } });
const postgres = new OwnPostgres(25732, { password: PG_PASSWORD });
const sasl = (mechanism: string, username: string, password: string): KafkaProperties => ({
  'security.protocol': 'SASL_PLAINTEXT',
  'sasl.mechanisms': mechanism,
  'sasl.username': username,
  'sasl.password': password,
});
const relayKafka = sasl('PLAIN', 'relay', RELAY_SASL);
const consumerKafka = sasl('SCRAM-SHA-256', 'consumer', CONSUMER_SASL);

/** Everything the run logged, printed, answered or threw, by where it came from. */
class Transcript {
  readonly entries: { source: string; text: string; at: Date }[] = [];

  add(source: string, text: string): void {
    this.entries.push({ source, text, at: new Date() });
  }

  logger(source: string) {
    return createLogger({ level: 'debug', destination: { write: (line: string) => void this.add(source, line) } });
  }

  /** An error in every form a user or a log shipper might print it, causes included. */
  error(source: string, err: unknown): void {
    this.add(`${source}: describeError`, describeError(err));
    this.add(`${source}: inspect`, inspect(err, { depth: 20 }));
    this.add(`${source}: inspect hidden`, inspect(err, { depth: 20, showHidden: true }));
    this.add(`${source}: JSON`, JSON.stringify(err) ?? '');
    const seen = new Set<unknown>();
    for (let current = err, depth = 0; current instanceof Error && !seen.has(current) && depth < 10; current = current.cause, depth++) {
      seen.add(current);
      this.add(`${source}: cause ${depth} message`, current.message);
      this.add(`${source}: cause ${depth} stack`, current.stack ?? '');
      this.add(`${source}: cause ${depth} String`, String(current));
      this.add(`${source}: cause ${depth} own properties`, JSON.stringify(current, Object.getOwnPropertyNames(current)));
    }
  }

  /** Entries holding a secret: whole, percent-encoded, base64, or its "Pa55" core. */
  leaks(): string[] {
    const forms = SECRETS.flatMap((s) => [s, encodeURIComponent(s), Buffer.from(s).toString('base64')]);
    return this.entries
      .filter((e) => forms.some((f) => e.text.includes(f)) || /Pa55/i.test(e.text))
      .map((e) => `${e.source}: ${e.text.slice(Math.max(0, e.text.search(/Pa55/i) - 200), e.text.search(/Pa55/i) + 100)}`);
  }

  text(prefix: string): string {
    return this.entries.filter((e) => e.source.startsWith(prefix)).map((e) => e.text).join('\n');
  }
}

const transcript = new Transcript();

/** A failing test leaves what the run said, for inspection. */
function dumpTranscript(): void {
  const file = join(tmpdir(), 'outbox-credentials-transcript.txt');
  writeFileSync(file, transcript.entries.map((e) => `=== ${e.at.toISOString()} ${e.source}\n${e.text}`).join('\n'));
  console.error(`credentials test: transcript in ${file}`);
}

/** A librdkafka properties file for the CLI's --kafka-config / OUTBOX_KAFKA_CONFIG. */
function kafkaConfigFile(name: string, properties: KafkaProperties): string {
  const file = join(dirname(postgres.dir), name);
  const lines = Object.entries(properties).map(([k, v]) => `${k}=${String(v)}`);
  writeFileSync(file, `# ${name}\n${lines.join('\n')}\n`, { mode: 0o600 });
  return file;
}

function cliEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  return {
    ...process.env,
    DATABASE_URL: postgres.url(),
    KAFKA_BROKERS: broker.brokers,
    OUTBOX_SCHEMA: SCHEMA,
    OUTBOX_RELAY_GROUP: GROUP,
    OUTBOX_RELAY_SHARDS: '2',
    LOG_LEVEL: 'debug',
    ...extra,
  };
}

/** Runs the CLI as a subprocess; its exit code, stdout and stderr go to the transcript. */
async function cli(label: string, args: string[], env: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  let result: { code: number; stdout: string; stderr: string };
  try {
    const { stdout, stderr } = await runFile(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', ...args], { cwd: root, env: cliEnv(env), timeout: 60_000 });
    result = { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    result = { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
  transcript.add(`cli ${label} stdout`, result.stdout);
  transcript.add(`cli ${label} stderr`, result.stderr);
  return result;
}

/** GETs a route of a relay's HTTP server; the answer goes to the transcript. */
async function http(label: string, port: number, path: string): Promise<{ status: number; body: string }> {
  const res = await fetch(`http://127.0.0.1:${port}${path}`);
  const body = await res.text();
  transcript.add(`http ${label} ${path} ${res.status}`, body);
  return { status: res.status, body };
}

function relayOptions(source: string, overrides: Partial<RelayOptions> = {}): RelayOptions {
  return {
    databaseUrl: postgres.url(),
    brokers: broker.brokers,
    kafka: { properties: relayKafka },
    schema: SCHEMA,
    group: GROUP,
    shards: 2,
    leaseMs: 3_000,
    pollIntervalMs: 500,
    retention: false,
    logger: transcript.logger(`relay ${source} log`),
    ...overrides,
  };
}

function consumer(source: string, overrides: { databaseUrl?: string; kafkaProperties?: KafkaProperties } = {}): Consumer {
  const c = createConsumer({
    databaseUrl: postgres.url(),
    brokers: broker.brokers,
    schema: SCHEMA,
    groupId: 'ledger',
    topics: [TOPIC],
    kafkaProperties: consumerKafka,
    logger: transcript.logger(`consumer ${source} log`),
    inboxRetention: false,
    handler: async (record, tx) => {
      await tx.query(`insert into ledger (outbox_id) values ($1::text)`, [record.headers.outboxId ?? null]);
    },
    ...overrides,
  });
  c.on('error', ({ error }) => transcript.error(`consumer ${source} error event`, error));
  return c;
}

/** What `start()` threw, recorded; fails the test when it started. Stopped afterwards either way. */
async function startFails(label: string, part: Relay | Consumer, timeoutMs = 60_000): Promise<Error> {
  const err = await within(timeoutMs, `${label} start`, part.start()).then(
    () => new Error(`${label}: started, but should have failed`),
    (thrown: unknown) => thrown as Error,
  );
  await part.stop().catch((thrown: unknown) => transcript.error(`${label} stop`, thrown));
  expect(err.message).not.toMatch(/started, but should have failed/);
  transcript.error(label, err);
  return err;
}

describe('credentials: no password reaches a log line, an error message or a printed object, with real PostgreSQL password auth and SASL', () => {
  let db: pg.Pool;
  let ledger: Consumer | undefined;
  const ids: string[] = [];

  beforeAll(async () => {
    await Promise.all([broker.start(), postgres.start()]);
    db = new pg.Pool({ connectionString: postgres.url(), max: 3 });
    db.on('error', () => undefined);
  }, 180_000);

  afterAll(async () => {
    await ledger?.stop().catch(() => undefined);
    await db?.end().catch(() => undefined);
    await Promise.all([broker.stop().catch(() => undefined), postgres.stop().catch(() => undefined)]);
    rmSync(broker.dir, { recursive: true, force: true });
    rmSync(dirname(postgres.dir), { recursive: true, force: true });
  }, 120_000);

  it('relay, consumer and CLI publish and apply every row exactly once over SASL and password auth, at debug level', { timeout: 120_000 }, async () => {
    onTestFailed(dumpTranscript);
    const migrated = await cli('migrate', ['migrate']);
    expect(migrated.code, migrated.stderr).toBe(0);
    await db.query('create table ledger (outbox_id text not null)');
    const admin = new KafkaAdmin({ brokers: broker.brokers, properties: relayKafka });
    try {
      await admin.createTopic({ topic: TOPIC, num_partitions: 3, replication_factor: 1 });
    } finally {
      admin.close();
    }
    const insert = async (n: number) => {
      const { rows } = await db.query<{ id: string }>(
        `insert into ${SCHEMA}.messages (topic, key, payload) select $1::text, 'k' || (i % 5), convert_to('v' || i, 'UTF8') from generate_series(1, $2::int) i returning id::text`,
        [TOPIC, n],
      );
      ids.push(...rows.map((r) => r.id));
    };
    const unsent = async () => (await db.query<{ n: number }>(`select count(*)::int as n from ${SCHEMA}.messages where state <> 'sent'`)).rows[0]!.n;
    const applied = async () => (await db.query<{ n: number }>('select count(*)::int as n from ledger')).rows[0]!.n;

    // The library: a relay with its dashboard, and the consumer.
    const relay = createRelay(relayOptions('library'));
    const server = await serveRelayHttp(relay, { host: '127.0.0.1', port: RELAY_HTTP }, relay.options.logger);
    ledger = consumer('library');
    try {
      await relay.start();
      await ledger.start();
      await insert(20);
      await waitFor(async () => (await unsent()) === 0 && (await applied()) === 20, { timeoutMs: 45_000, message: '20 rows sent and applied' });
      for (const path of ['/', '/healthz', '/readyz', '/metrics', '/api/status', '/api/stuck', '/api/activity', '/api/dead-letters?group=ledger']) {
        expect((await http('library relay', RELAY_HTTP, path)).status, path).toBe(200);
      }
      // What users do with what they are handed: print it, serialise it, log it.
      transcript.add('printed relay', inspect(relay, { depth: 20 }));
      transcript.add('printed relay options', `${inspect(relay.options, { depth: 20 })}\n${JSON.stringify(relay.options)}`);
      transcript.add('printed consumer', `${inspect(ledger, { depth: 20 })}\n${JSON.stringify(ledger)}`);
      relay.options.logger.info({ relay, consumer: ledger, options: relay.options }, 'objects');
    } finally {
      await relay.stop();
      server.closeAllConnections();
      server.close();
    }

    // The CLI: status and stuck read PostgreSQL and the brokers (lag) with the credentials.
    const configFile = kafkaConfigFile('relay.properties', relayKafka);
    const status = await cli('status', ['status', '--kafka-config', configFile]);
    expect(status.code, status.stderr).toBe(0);
    expect(status.stdout).toMatch(/ledger.*orders\[\d\]\tstored \d+\tend \d+\tlag \d+/s);
    const stuck = await cli('stuck', ['stuck', '--older-than', '0s'], { OUTBOX_KAFKA_CONFIG: configFile });
    expect(stuck.code, stuck.stderr).toBe(0);
    const offsets = await cli('offsets show', ['offsets', 'show', '--group', 'ledger'], { OUTBOX_KAFKA_CONFIG: configFile });
    expect(offsets.code, offsets.stderr).toBe(0);
    expect(offsets.stdout).toMatch(/orders\t\d\t\d+\t\d+\t\d+\t/);

    // The CLI relay publishes the next rows (its Kafka login from OUTBOX_KAFKA_CONFIG).
    const child = spawnTracked(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'relay', '--lease-ms', '3000', '--http', `127.0.0.1:${CLI_HTTP}`], {
      cwd: root,
      env: cliEnv({ OUTBOX_KAFKA_CONFIG: configFile }),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    try {
      await waitFor(async () => (await fetch(`http://127.0.0.1:${CLI_HTTP}/readyz`)).status === 200 || child.exitCode !== null, { timeoutMs: 45_000, message: 'CLI relay ready' });
      expect(child.exitCode, stderr).toBeNull();
      await insert(10);
      await waitFor(async () => (await unsent()) === 0 && (await applied()) === 30, { timeoutMs: 45_000, message: '30 rows sent and applied' });
      for (const path of ['/readyz', '/metrics', '/api/status']) expect((await http('cli relay', CLI_HTTP, path)).status, path).toBe(200);
    } finally {
      child.kill('SIGTERM');
      expect(await exited).toBe(0);
      transcript.add('cli relay stdout', stdout);
      transcript.add('cli relay stderr', stderr);
    }

    // Exactly once: in Kafka (read_committed) and in the ledger.
    const messages = await readTopic({ brokers: broker.brokers, properties: relayKafka }, TOPIC, 3, { expected: ids.length, settleMs: 1_000 });
    expectExactlyOnce(messages, ids);
    const { rows } = await db.query<{ outbox_id: string; n: number }>('select outbox_id, count(*)::int as n from ledger group by outbox_id');
    expect(rows.filter((r) => r.n !== 1)).toEqual([]);
    expect(new Set(rows.map((r) => r.outbox_id))).toEqual(new Set(ids));

    // The run logged at debug level, through every part.
    expect(transcript.text('relay library log').split('\n').filter((l) => l.includes('"level":20')).length).toBeGreaterThan(0);
    expect(transcript.text('consumer library log').length).toBeGreaterThan(0);
    expect(stdout).toContain('"msg":"relay started"');
    expect(transcript.leaks()).toEqual([]);
  });

  it('wrong passwords, a broker down and a database down: no password in any error, CLI output or HTTP answer', { timeout: 120_000 }, async () => {
    onTestFailed(dumpTranscript);
    const wrongPg = postgres.url(PG_WRONG);
    const unencoded = `postgres://postgres:${PG_PASSWORD}@127.0.0.1:${postgres.port}/postgres`;
    const wrongSaslFile = kafkaConfigFile('wrong.properties', sasl('PLAIN', 'relay', SASL_WRONG));
    const goodSaslFile = kafkaConfigFile('relay.properties', relayKafka);

    // Wrong passwords, all at once (a client refused by SASL gives up only at its timeouts).
    const cliFails = async (label: string, args: string[], env: Record<string, string>, expected?: RegExp) => {
      const out = await cli(label, args, env);
      expect(out.code, `${label}: ${out.stdout}`).toBe(1);
      if (expected) expect(out.stderr).toMatch(expected);
    };
    await Promise.all([
      startFails('relay wrong pg password', createRelay(relayOptions('wrong pg', { databaseUrl: wrongPg }))).then((err) =>
        expect(describeError(err)).toMatch(/password authentication failed/),
      ),
      startFails('consumer wrong pg password', consumer('wrong pg', { databaseUrl: wrongPg })),
      // The classic slip: the password in the URL without its percent-encoding.
      startFails('relay password not encoded', createRelay(relayOptions('not encoded', { databaseUrl: unencoded }))),
      startFails('relay wrong sasl password', createRelay(relayOptions('wrong sasl', { kafka: { properties: sasl('PLAIN', 'relay', SASL_WRONG) } }))),
      startFails('consumer wrong sasl password', consumer('wrong sasl', { kafkaProperties: sasl('SCRAM-SHA-256', 'consumer', SASL_WRONG) })),
      (async () => {
        await cliFails('status password not encoded', ['status'], { DATABASE_URL: unencoded });
        for (const command of ['status', 'migrate']) {
          await cliFails(`${command} wrong pg password`, [command], { DATABASE_URL: wrongPg, OUTBOX_KAFKA_CONFIG: goodSaslFile }, /password authentication failed/);
        }
        await cliFails('relay wrong pg password', ['relay', '--http', 'off'], { DATABASE_URL: wrongPg, OUTBOX_KAFKA_CONFIG: goodSaslFile }, /password authentication failed/);
        // Given on the command line (where a password should not be, but may well be).
        await cliFails('stuck --database-url wrong', ['stuck', '--database-url', wrongPg], {}, /password authentication failed/);
      })(),
      (async () => {
        const status = await cli('status wrong sasl password', ['status', '--json'], { OUTBOX_KAFKA_CONFIG: wrongSaslFile });
        expect(status.code, status.stderr).toBe(0);
        expect(status.stdout).toContain('brokers did not answer');
        await cliFails('relay wrong sasl password', ['relay', '--http', 'off'], { OUTBOX_KAFKA_CONFIG: wrongSaslFile });
      })(),
    ]);
    // The wrong SASL passwords reached the broker and were refused as such (the clients
    // themselves only see their connections fail).
    const brokerLog = readFileSync(join(broker.dir, 'broker.log'), 'utf8');
    expect(brokerLog).toMatch(/Failed authentication with .*Invalid username or password/);
    expect(brokerLog).toMatch(/Failed authentication with .*invalid credentials with SASL mechanism SCRAM-SHA-256/);

    // A relay (with its HTTP server) and the consumer at work; then the broker dies under them.
    // Its producers give up on a dead broker after 5 s (not 30), so that stop() is quick.
    const relay = createRelay(relayOptions('outage', { transactionOperationTimeoutMs: 5_000 }));
    const server = await serveRelayHttp(relay, { host: '127.0.0.1', port: RELAY_HTTP }, relay.options.logger);
    try {
      await relay.start();
      await broker.kill();
      await db.query(`insert into ${SCHEMA}.messages (topic, key, payload) values ($1::text, 'k-outage', '\\x76'::bytea)`, [TOPIC]);
      await waitFor(async () => (await http('outage relay, broker down', RELAY_HTTP, '/readyz')).status === 503, { timeoutMs: 20_000, message: 'readyz: brokers down' });
      await Promise.all([
        http('outage relay, broker down', RELAY_HTTP, '/api/status'),
        http('outage relay, broker down', RELAY_HTTP, '/metrics'),
        startFails('relay broker down', createRelay(relayOptions('broker down'))),
        cli('status broker down', ['status'], { OUTBOX_KAFKA_CONFIG: goodSaslFile }).then((out) => expect(out.code, out.stderr).toBe(0)),
      ]);

      // And the database too.
      await postgres.stop();
      await waitFor(async () => (await http('outage relay, database down', RELAY_HTTP, '/readyz')).body.includes('database'), { timeoutMs: 20_000, message: 'readyz: database down' });
      await Promise.all([
        http('outage relay, database down', RELAY_HTTP, '/api/status'),
        startFails('relay database down', createRelay(relayOptions('database down'))),
        startFails('consumer database down', consumer('database down')),
        cliFails('status database down', ['status'], { OUTBOX_KAFKA_CONFIG: goodSaslFile }),
        cliFails('stuck database down', ['stuck'], {}),
      ]);
      // The running relay and consumer ran into the outage and said so.
      await waitFor(() => /"level":(40|50)/.test(transcript.text('relay outage log')), { timeoutMs: 20_000, message: 'the relay logged the outage' });
      await waitFor(() => /"level":(40|50)/.test(transcript.text('consumer library log')), { timeoutMs: 20_000, message: 'the consumer logged the outage' });
    } finally {
      // Both wait for their Kafka calls in flight to give up.
      await Promise.all([
        relay.stop().catch((err: unknown) => transcript.error('relay outage stop', err)),
        ledger?.stop().catch((err: unknown) => transcript.error('consumer stop', err)),
      ]);
      ledger = undefined;
      server.closeAllConnections();
      server.close();
    }
    expect(transcript.leaks()).toEqual([]);
  });
});
