/**
 * Records that this group applies outbox id `$3` of source `$2` (the publishing outbox's
 * `outbox-source` header: ids are unique per outbox database only). The primary key
 * (group_id, source, outbox_id) turns a second application into "no row returned", inside
 * the transaction that would apply it; a concurrent claimer waits for the first one's
 * outcome instead of both applying. `$7` is the topic id of the log the record came from.
 */
export function claimInboxSql(q: string): string {
  return `
insert into ${q}.consumer_inbox (group_id, source, outbox_id, topic, partition, "offset", topic_id)
values ($1::text, $2::text, $3::text, $4::text, $5::int, $6::bigint, $7::text)
on conflict (group_id, source, outbox_id) do nothing
returning 1 as claimed`;
}
