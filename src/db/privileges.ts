import { quoteSchema } from './identifiers.js';
import type { Queryable } from './queryable.js';
import { PRIVILEGE_CHECKS_SQL } from '../sql/catalog.js';
import { grantIncluded, ROLE_GRANTS, type GrantNeed, type RoleKind, type RoleOptions } from './roles.js';

export interface MissingPrivilege {
  /** What is missing, as a GRANT would name it: `DELETE on outbox.messages`. */
  privilege: string;
  need: GrantNeed;
  why: string;
}

/**
 * The privileges of a role kind (ROLE_GRANTS) that the current user lacks on `schema`
 * (migrated), as PostgreSQL's has_*_privilege functions judge them: an
 * owner or a superuser lacks none, a member of the role's group lacks none. `partitioned`
 * adds what the relay needs on a partitioned outbox. One round trip.
 */
export async function missingPrivileges(
  db: Queryable,
  schema: string,
  kind: RoleKind,
  options: RoleOptions & { partitioned?: boolean },
): Promise<MissingPrivilege[]> {
  const q = quoteSchema(schema);
  const checks: { kind: 'schema' | 'table' | 'column' | 'function'; object: string; column: string | null; privilege: string; label: string; need: GrantNeed; why: string }[] = [
    // has_schema_privilege takes the name as it is, the others parse a (quoted) SQL name.
    { kind: 'schema', object: schema, column: null, privilege: 'USAGE', label: `USAGE on schema ${q}`, need: 'always', why: 'every role uses the schema' },
  ];
  const spec = ROLE_GRANTS[kind];
  for (const grant of spec.tables) {
    if (!grantIncluded(grant.need, options)) continue;
    const object = `${q}.${grant.table}`;
    const base = { object, need: grant.need ?? 'always', why: grant.why };
    for (const p of grant.privileges ?? []) checks.push({ ...base, kind: 'table', column: null, privilege: p.toUpperCase(), label: `${p.toUpperCase()} on ${object}` });
    for (const [privilege, columns] of [['SELECT', grant.select], ['UPDATE', grant.update]] as const) {
      for (const c of columns ?? []) checks.push({ ...base, kind: 'column', column: c, privilege, label: `${privilege} (${c}) on ${object}` });
    }
  }
  for (const grant of spec.functions) {
    if (!grantIncluded(grant.need, options)) continue;
    const object = `${q}.${grant.fn}`;
    checks.push({ kind: 'function', object, column: null, privilege: 'EXECUTE', label: `EXECUTE on function ${object}`, need: grant.need ?? 'always', why: grant.why });
  }
  if (kind === 'relay' && options.partitioned) {
    for (const fn of ['maintain_message_partitions(interval)', 'message_partition_bounds()']) {
      const object = `${q}.${fn}`;
      checks.push({ kind: 'function', object, column: null, privilege: 'EXECUTE', label: `EXECUTE on function ${object}`, need: 'always', why: 'a partitioned outbox: its partitions are kept by the relay' });
    }
  }
  // CASE evaluates one branch per row: each object is looked up by the function of its kind.
  // An object that does not exist is not judged here (the has_* functions would raise): a
  // damaged schema is reported by the checks that read it, with how to repair it.
  const { rows } = await db.query<{ ok: boolean }>(
    PRIVILEGE_CHECKS_SQL,
    [checks.map((c) => c.kind), checks.map((c) => c.object), checks.map((c) => c.column), checks.map((c) => c.privilege)],
  );
  return checks.filter((_, i) => rows[i]?.ok !== true).map((c) => ({ privilege: c.label, need: c.need, why: c.why }));
}
