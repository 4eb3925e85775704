#!/usr/bin/env node
import { describeError, OutboxError } from '../errors.js';
import { migrateCommand } from './migrate.js';

type Command = (argv: string[]) => Promise<number>;

/** Sub-commands; each lives in its own file and parses its own flags. */
const COMMANDS: Record<string, { run: () => Promise<Command>; summary: string }> = {
  migrate: { run: async () => migrateCommand, summary: 'apply database migrations' },
  relay: { run: async () => (await import('./relay.js')).relayCommand, summary: 'run the relay: outbox rows to Kafka, exactly once' },
  status: { run: async () => (await import('./inspect.js')).statusCommand, summary: 'the outbox, the relays and the consumers at a glance, with a verdict' },
  stuck: { run: async () => (await import('./inspect.js')).stuckCommand, summary: 'outbox rows that should have gone and did not, and what holds each back' },
  show: { run: async () => (await import('./inspect.js')).showCommand, summary: 'one outbox row in full' },
  retry: { run: async () => (await import('./repair.js')).retryCommand, summary: 'put failed or dead outbox rows back to pending, in per-key order (audited)' },
  skip: { run: async () => (await import('./repair.js')).skipCommand, summary: 'park outbox rows for good so their keys move on (audited)' },
  'dead-letters': { run: async () => (await import('./dead-letters.js')).deadLettersCommand, summary: 'list, show, replay or discard a consumer group\'s dead letters (audited)' },
  offsets: { run: async () => (await import('./offsets.js')).offsetsCommand, summary: 'show, set or rewind consumer offsets stored in PostgreSQL' },
  roles: { run: async () => (await import('./roles.js')).rolesCommand, summary: 'print or apply least-privilege roles: writer, relay, consumer, operator' },
  try: { run: async () => (await import('./try.js')).tryCommand, summary: 'try presets, shards and key designs on your cluster through the real relay' },
};

const USAGE = `usage: outbox-relay <command> [options]

commands:
${Object.entries(COMMANDS)
  .map(([name, c]) => `  ${name.padEnd(13)} ${c.summary}`)
  .join('\n')}

Every command takes --database-url (env DATABASE_URL), --brokers (env KAFKA_BROKERS),
--kafka-config FILE (librdkafka properties, e.g. SASL: name=value lines; env
OUTBOX_KAFKA_CONFIG), --schema (env OUTBOX_SCHEMA, default outbox) and --help.`;

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    console.log(USAGE);
    return name ? 0 : 2;
  }
  const command = COMMANDS[name];
  if (!command) {
    console.error(`unknown command ${JSON.stringify(name)}\n\n${USAGE}`);
    return 2;
  }
  try {
    return await (await command.run())(rest);
  } catch (err) {
    // describeError names each error's code in brackets, the OutboxError's among them.
    const described = describeError(err);
    // A role without a privilege it needs (SQLSTATE 42501): say where the grants come from.
    const denied = (err instanceof OutboxError && err.code === 'PERMISSION_DENIED') || described.includes('[42501]');
    console.error(`outbox-relay ${name}: ${described}${denied ? '; the roles and their grants: outbox-relay roles --help' : ''}`);
    return err instanceof OutboxError && ['INVALID_ARGUMENT', 'INVALID_OPTIONS', 'NOT_FOUND'].includes(err.code) ? 2 : 1;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    console.error(err);
    process.exitCode = 1;
  },
);
