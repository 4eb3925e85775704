import { loadMigrations } from '../db/migrate.js';
import { applyRoles, rolesPsqlScript, rolesSql } from '../sql/roles.js';
import { ROLE_KINDS, roleNames, type RoleNames } from '../db/roles.js';
import { bad, schemaFrom, withPool, flagsOf } from './args.js';

export const ROLES_HELP = `outbox-relay roles [--schema NAME] [--writer NAME] [--relay NAME] [--consumer NAME] [--operator NAME]
                   [--without-retention] [--claim-checks] [--apply] [--psql]

Prints (or, with --apply, applies) the SQL of four NOLOGIN group roles with least
privilege on the outbox schema; grant each to the login role of a service:

  writer     order services: INSERT into messages (and SELECT of its id column: enqueue
             returns the new ids); nothing else is readable
  relay      the relay: claims, marks, leases, members, checkpoint cursors, retention; no DDL
  consumer   exactly-once consumers: consumer_offsets, consumer_inbox, dead_letters (grant
             your handlers' own tables yourself)
  operator   on-call: status, stuck, show, audited retry and skip, dead letters, offsets

  --writer/--relay/--consumer/--operator NAME   role names (default <schema>_writer, ...)
  --without-retention   the relay runs with --retention-days 0: no DELETE of sent rows
  --claim-checks        writers and consumers use the built-in claim-check store
  --apply               apply it (--database-url, env DATABASE_URL): as the schema's owner with
                        CREATEROLE, or a superuser, after outbox-relay migrate. Creates the roles
                        that do not exist and sets the privileges of all four on the outbox's
                        objects (what they had there is revoked first); safe to run again
  --psql                print scripts/roles.sql instead: the same SQL with psql variables

Exit codes: 0 done, 2 bad input, 1 other errors (schema not migrated, not allowed).`;

export async function rolesCommand(argv: string[]): Promise<number> {
  const values = flagsOf(argv, {
    ...Object.fromEntries(ROLE_KINDS.map((kind) => [kind, { type: 'string' }] as const)),
    'without-retention': { type: 'boolean' },
    'claim-checks': { type: 'boolean' },
    apply: { type: 'boolean' },
    psql: { type: 'boolean' },
  }, ROLES_HELP);
  if (!values) return 0;
  const latest = (await loadMigrations()).at(-1)?.id ?? 0;
  const given = Object.fromEntries(ROLE_KINDS.filter((kind) => values[kind] !== undefined).map((kind) => [kind, values[kind] as string])) as Partial<RoleNames>;
  if (values.psql) {
    const others = ['apply', 'without-retention', 'claim-checks', 'schema', ...ROLE_KINDS].filter((flag) => values[flag] !== undefined);
    if (others.length > 0) bad(`--psql prints the script whose names and options are psql variables: drop --${others.join(', --')}`);
    process.stdout.write(rolesPsqlScript(latest));
    return 0;
  }
  const options = { schema: schemaFrom(values), names: given, retention: values['without-retention'] !== true, claimChecks: values['claim-checks'] === true };
  const names = roleNames(options.schema, options.names);
  if (!values.apply) {
    process.stdout.write(rolesSql(options, latest));
    return 0;
  }
  await withPool(values, (pool) => applyRoles({ ...options, db: pool }));
  console.log(`roles of schema ${options.schema} applied: ${ROLE_KINDS.map((kind) => `${kind} ${names[kind]}`).join(', ')}`);
  console.log(`grant each to the login role of a service, e.g. grant "${names.relay}" to relay_login;`);
  return 0;
}
