/**
 * This outbox's source id, read once at start and sent as header `outbox-source` on every
 * record. Outbox ids are unique only within one outbox; consumers of a topic fed by several
 * outboxes tell events apart by (source, id). The table holds exactly one row, written by
 * migration 0005, so no filter and no ordering are needed.
 */
export const readSourceSql = (q: string) => `
select source_id from ${q}.outbox_source`;
