/**
 * Deletes one bounded batch of sent rows older than the retention period. Small batches
 * keep locks short and let autovacuum keep up; the caller loops until a batch comes back
 * short. The sent_at partial index finds the candidates without touching unsent rows.
 * `table` is `messages`, or in a partitioned outbox its default partition (the other
 * partitions are dropped whole when they expire: deleting their rows one by one first
 * would undo the point of partitioning; see deleteExpiredInKeptPartitionsSql).
 */
export function deleteExpiredSql(q: string, table: 'messages' | 'messages_default' = 'messages'): string {
  return `
delete from ${q}.${table}
 where id in (
   select id from ${q}.${table}
    where state = 'sent' and sent_at < now() - $1::bigint * interval '1 millisecond'
    order by sent_at
    limit $2::int)`;
}

/**
 * In a partitioned outbox, the same for the partitions past their time that are kept for
 * rows they hold (not sent, or sent within the period; see maintain_message_partitions):
 * their sent rows go one batch at a time, as in an unpartitioned outbox, so a dead row does
 * not keep a whole partition of sent rows. They are the partitions whose range ended before
 * the retention period; the others are pruned by the created_at bound (at run time, in
 * the search and in the delete, which finds the rows by primary key).
 */
export function deleteExpiredInKeptPartitionsSql(q: string): string {
  return `
with bound as materialized (
  select max(upper_bound) as upper from ${q}.message_partition_bounds()
   where not is_default and upper_bound <= now() - $1::bigint * interval '1 millisecond'
)
delete from ${q}.messages
 where created_at < (select upper from bound)
   and id = any (array(
         select id from ${q}.messages
          where state = 'sent' and sent_at < now() - $1::bigint * interval '1 millisecond'
            and created_at < (select upper from bound)
          order by sent_at
          limit $2::int))`;
}

/**
 * Deletes one bounded batch of claim-check bodies past the retention period: a body is
 * kept while its row is unsent and then as long as the sent row is kept, since a consumer
 * may read the record (and fetch its body) until then.
 */
export function deleteExpiredClaimChecksSql(q: string): string {
  return `
delete from ${q}.claim_checks
 where id in (
   select c.id from ${q}.claim_checks c
    where c.created_at < now() - $1::bigint * interval '1 millisecond'
      and not exists (
            select 1 from ${q}.messages m
             where m.id = c.message_id
               and (m.state <> 'sent' or m.sent_at >= now() - $1::bigint * interval '1 millisecond'))
    order by c.created_at
    limit $2::int)`;
}
