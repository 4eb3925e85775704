import pg from 'pg';

/**
 * The first statement of every batch transaction: the partition's offset row, locked. Every
 * owner of a partition takes this lock first and the inbox rows after it, so lock order is
 * the same for all of them, and a consumer that lost the partition while its handler hung
 * holds the offset row, never an inbox row the new owner would queue behind unseen. The
 * wait is bounded by the `lock_timeout` set for this statement alone, and the holder's
 * transaction by the handler timeout (aborted at the database), so a new owner always gets
 * through. No row: an operator deleted it; the caller recreates it.
 */
export function lockOffsetSql(q: string): string {
  return lockOffsetText(q, '$1::text', '$2::text', '$3::int');
}

/**
 * The same statement with its values written in, for the batch's opening statements (sent
 * as one message, which takes no parameters): `group` and `topic` as escaped literals,
 * `partition` a checked integer.
 */
export function lockOffsetInlineSql(q: string, group: string, topic: string, partition: number): string {
  if (!Number.isInteger(partition)) throw new TypeError(`partition must be an integer, got ${partition}`);
  return lockOffsetText(q, pg.escapeLiteral(group), pg.escapeLiteral(topic), String(partition));
}

function lockOffsetText(q: string, group: string, topic: string, partition: string): string {
  return `
select next_offset, topic_id from ${q}.consumer_offsets
 where group_id = ${group} and topic = ${topic} and partition = ${partition}
   for update`;
}
