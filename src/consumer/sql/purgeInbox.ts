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
