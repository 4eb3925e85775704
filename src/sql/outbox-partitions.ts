/** Whether the outbox uses the partitioned layout (migrate's `partitionBy`): its settings table exists. */
export function isPartitionedSql(q: string): string {
  return `select to_regclass('${q}.message_partitioning') is not null as partitioned`;
}

/**
 * Makes the partitions ahead and, with `$1` (ms) given, drops the expired ones that hold no
 * row to keep: see maintain_message_partitions_as_of() in
 * migrations/optional/partition_messages_by_time.sql. One row per partition acted on.
 */
export function maintainPartitionsSql(q: string): string {
  return `
select action, partition_name, detail
  from ${q}.maintain_message_partitions(case when $1::bigint is null then null else $1::bigint * interval '1 millisecond' end)`;
}
