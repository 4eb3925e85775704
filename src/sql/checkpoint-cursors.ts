// Where each shard's checkpoint reading starts (relay_shards' checkpoint columns; moved by
// the marks, see outbox-marks.ts).

/** The shard's checkpoint cursor: offset, the partition and the checkpoint topic incarnation it belongs to. */
export const checkpointCursorSql = (q: string) => `
select checkpoint_offset::text as offset, checkpoint_topic_id as topic_id, checkpoint_partition as partition
  from ${q}.relay_shards where relay_group = $1::text and shard = $2::int`;
