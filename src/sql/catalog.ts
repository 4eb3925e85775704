// Questions to the database about itself: is it there, which tables exist, who are we, how
// far is a schema migrated.

/** The cheapest round trip: the database answers. */
export const PING_SQL = 'select 1';

/** `$1` (a qualified, quoted table name) as a regclass, or null when no such table exists. */
export const TABLE_EXISTS_SQL = 'select to_regclass($1::text) as table';

/** The role the session runs as, for messages about missing privileges. */
export const CURRENT_ROLE_SQL = 'select current_user as role';

/** The newest migration applied to a schema (fails when the schema or its table is missing). */
export function schemaVersionSql(q: string): string {
  return `select max(id) as id from ${q}.migrations`;
}

/**
 * Whether the session's role holds each privilege of a list (`$1` kinds, `$2` objects, `$3`
 * columns, `$4` privileges), in order. CASE evaluates one branch per row: each object is
 * looked up by the function of its kind. An object that does not exist counts as held (the
 * has_* functions would raise): a damaged schema is reported by the checks that read it.
 */
export const PRIVILEGE_CHECKS_SQL = `select case when c.kind in ('table', 'column') and to_regclass(c.object) is null then true
             when c.kind = 'function' and to_regprocedure(c.object) is null then true
             else case c.kind
                    when 'schema' then has_schema_privilege(c.object, c.privilege)
                    when 'table' then has_table_privilege(c.object, c.privilege)
                    when 'column' then has_column_privilege(c.object, c.col, c.privilege)
                    else has_function_privilege(c.object, c.privilege) end end as ok
   from unnest($1::text[], $2::text[], $3::text[], $4::text[]) with ordinality as c(kind, object, col, privilege, n)
  order by c.n`;
