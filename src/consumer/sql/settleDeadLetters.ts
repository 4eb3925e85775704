import pg from 'pg';

export interface SettleAndAdvance {
  groupId: string;
  topic: string;
  partition: number;
  /** The next offset read under the lock at the start of the transaction. */
  expected: number;
  next: number;
  /** Offsets of the records the batch applied. */
  applied: readonly number[];
  topicId: string | null;
}

/**
 * The end of a batch, in one statement: settle the dead letters of the records it applied,
 * then compare-and-set the partition's next offset.
 *
 * - Settle: a record applied normally (typically after a rewind, once its handler was
 *   fixed) settles its pending dead letter in the same transaction, so a later replay
 *   cannot apply it a second time. Only a dead letter of the same topic incarnation:
 *   a recreated topic's record at that offset is another record. The unique index on the
 *   position finds it; a batch may have applied no record.
 * - Advance: as advanceOffsetSql, from `expected` to `next`; no row returned means another
 *   consumer (or an operator) moved the offset, and the caller rolls everything back (the
 *   settled dead letters with it).
 */
export function settleAndAdvanceSql(q: string, v: SettleAndAdvance): string {
  // Sent with the deferred-constraint check as one message, which takes no parameters: the
  // values are written in, strings as escaped literals, numbers checked to be integers.
  const int = (n: number): string => {
    if (!Number.isSafeInteger(n)) throw new TypeError(`expected an integer, got ${n}`);
    return String(n);
  };
  const group = pg.escapeLiteral(v.groupId);
  const topic = pg.escapeLiteral(v.topic);
  const topicId = v.topicId === null ? 'null::text' : pg.escapeLiteral(v.topicId);
  return `
with settled as (
  update ${q}.dead_letters
     set replayed_at = now(), replay_requested_at = null
   where group_id = ${group} and topic = ${topic} and partition = ${int(v.partition)}
     and "offset" = any('{${v.applied.map(int).join(',')}}'::bigint[]) and replayed_at is null
     and (topic_id is null or ${topicId} is null or topic_id = ${topicId})
)
update ${q}.consumer_offsets
   set next_offset = ${int(v.next)}, updated_at = now()
 where group_id = ${group} and topic = ${topic} and partition = ${int(v.partition)}
   and next_offset = ${int(v.expected)}
returning next_offset`;
}
