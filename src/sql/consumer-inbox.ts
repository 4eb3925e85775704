/**
 * Records that this group applies the outbox ids `$6` of sources `$5` (the publishing
 * outbox's `outbox-source` header: ids are unique per outbox database only), at offsets
 * `$7` of partition `$3` of topic `$2` (topic id `$4`), in one statement for a whole batch.
 * The primary key (group_id, source, outbox_id) turns a second application into "not
 * returned", inside the transaction that would apply it; a concurrent claimer waits for
 * the first one's outcome instead of both applying. Rows are inserted in key order, so two
 * batches claiming overlapping ids (one event published to two partitions) lock them in
 * the same order and cannot deadlock. The caller passes each (source, id) once.
 */
export function claimInboxSql(q: string): string {
  return `
insert into ${q}.consumer_inbox (group_id, source, outbox_id, topic, partition, "offset", topic_id)
select $1::text, c.source, c.outbox_id, $2::text, $3::int, c."offset", $4::text
  from unnest($5::text[], $6::text[], $7::bigint[]) as c(source, outbox_id, "offset")
 order by c.source, c.outbox_id
on conflict (group_id, source, outbox_id) do nothing
returning source, outbox_id`;
}

/**
 * Takes back claims made earlier in the same transaction, for records a batch did not get
 * to (it stopped before the poll deadline): they are applied, and claimed again, later.
 */
export function unclaimInboxSql(q: string): string {
  return `
delete from ${q}.consumer_inbox
 where group_id = $1::text
   and (source, outbox_id) in (select * from unnest($2::text[], $3::text[]))`;
}

/**
 * Deletes one bounded batch of a group's inbox rows applied more than `$2` ms ago, oldest
 * first, and only rows whose record lies below the partition's stored next offset: a record
 * at or after it can still be delivered again (a rewind, a reset), and its inbox row is what
 * keeps it from being applied twice. Small batches keep locks short and let autovacuum keep
 * up; `skip locked` leaves rows another member's purge holds. The (group_id, applied_at)
 * index finds the candidates.
 */
export function purgeInboxSql(q: string): string {
  return `
delete from ${q}.consumer_inbox
 where ctid in (
   select i.ctid
     from ${q}.consumer_inbox i
     join ${q}.consumer_offsets o
       on o.group_id = i.group_id and o.topic = i.topic and o.partition = i.partition
    where i.group_id = $1::text
      and i.applied_at < now() - $2::bigint * interval '1 millisecond'
      and i."offset" < o.next_offset
    order by i.applied_at
    limit $3::int
      for update of i skip locked)`;
}
