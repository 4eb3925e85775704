// Bodies kept aside by the PostgreSQL claim-check store (see claim-check/store.ts).

/** Stores a body; returns its id. */
export function insertClaimCheckSql(q: string): string {
  return `insert into ${q}.claim_checks (body, size, sha256) values ($1, $2, $3) returning id::text`;
}

/** Links a body to the outbox row that refers to it, once the row has its id. */
export function linkClaimCheckSql(q: string): string {
  return `update ${q}.claim_checks set message_id = $2 where id = $1::uuid`;
}

export function readClaimCheckSql(q: string): string {
  return `select body from ${q}.claim_checks where id = $1::uuid`;
}
