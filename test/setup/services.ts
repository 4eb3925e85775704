import { execFileSync, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import type { TestProject } from 'vitest/node';

const root = fileURLToPath(new URL('../..', import.meta.url));

declare module 'vitest' {
  export interface ProvidedContext {
    databaseUrl: string;
    kafkaBrokers: string;
  }
}

function dockerReachable(): boolean {
  if (process.env.OUTBOX_TEST_DOCKER === '0') return false;
  const result = spawnSync('docker', ['info', '--format', '{{.ServerVersion}}'], { timeout: 5_000, stdio: 'ignore' });
  return result.status === 0;
}

async function startContainers(): Promise<{ databaseUrl: string; kafkaBrokers: string; stop: () => Promise<void> }> {
  const { PostgreSqlContainer } = await import('@testcontainers/postgresql');
  const { KafkaContainer } = await import('@testcontainers/kafka');
  const postgres = await new PostgreSqlContainer('postgres:16-alpine').start();
  const kafka = await new KafkaContainer('apache/kafka:4.1.1')
    .withKraft()
    .withEnvironment({
      KAFKA_AUTO_CREATE_TOPICS_ENABLE: 'false',
      KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS: '0',
      KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR: '1',
      KAFKA_TRANSACTION_STATE_LOG_MIN_ISR: '1',
    })
    .start();
  return {
    databaseUrl: postgres.getConnectionUri(),
    kafkaBrokers: `${kafka.getHost()}:${kafka.getMappedPort(9093)}`,
    stop: async () => {
      await kafka.stop();
      await postgres.stop();
    },
  };
}

/**
 * Services for the whole run, started once: what DATABASE_URL / KAFKA_BROKERS name; else
 * containers when a Docker engine answers; else the local services of scripts/services.sh
 * (stopped again afterwards if this run started them).
 */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  let databaseUrl = process.env.DATABASE_URL;
  let kafkaBrokers = process.env.KAFKA_BROKERS;
  let teardown = async (): Promise<void> => undefined;

  if (!databaseUrl || !kafkaBrokers) {
    if (dockerReachable()) {
      const containers = await startContainers();
      databaseUrl ??= containers.databaseUrl;
      kafkaBrokers ??= containers.kafkaBrokers;
      teardown = containers.stop;
    } else {
      const brokerDir = `${root}/.services/kafka`;
      const wasRunning = spawnSync('bash', [`${root}/scripts/kafka-broker.sh`, 'status', brokerDir]).status === 0;
      const out = execFileSync('bash', [`${root}/scripts/services.sh`, 'up'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
      const vars = Object.fromEntries(out.trim().split('\n').map((line) => line.split(/=(.*)/s).slice(0, 2) as [string, string]));
      databaseUrl ??= vars.DATABASE_URL;
      kafkaBrokers ??= vars.KAFKA_BROKERS;
      if (!wasRunning && !process.env.OUTBOX_KEEP_SERVICES) {
        teardown = async () => {
          execFileSync('bash', [`${root}/scripts/kafka-broker.sh`, 'stop', brokerDir], { stdio: 'inherit' });
        };
      }
    }
  }
  if (!databaseUrl || !kafkaBrokers) throw new Error('test services did not come up');

  // Schemas of earlier runs were kept for inspection; this run starts clean. A schema is
  // named after the test process that made it (uniqueName): those of a run still going on
  // this machine, beside this one, are left to it; another run starting now may drop the
  // same ones first.
  const client = new pg.Client({ connectionString: databaseUrl });
  await client.connect();
  const { rows } = await client.query<{ nspname: string }>(`select nspname from pg_namespace where nspname like 't\\_%'`);
  for (const { nspname } of rows) {
    if (!processAlive(Number(/^t_(\d+)_/.exec(nspname)?.[1]))) await client.query(`drop schema if exists "${nspname}" cascade`);
  }
  await client.end();

  project.provide('databaseUrl', databaseUrl);
  project.provide('kafkaBrokers', kafkaBrokers);
  return teardown;
}

function processAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
