/**
 * Largest record key the outbox accepts, in bytes of UTF-8 (`octet_length(key)` in a UTF8
 * database): 2,048.
 *
 * Why: per-key order rests on B-tree indexes of `(key, id)` (the failed and dead rows that
 * block their key, the rows held behind them). A B-tree entry may not exceed about a third
 * of a page, 2,704 bytes with PostgreSQL's 8 KB pages, measured after compression; a longer
 * key inserts fine (nothing indexes a pending row by key) but its row can then never be
 * marked failed or dead (SQLSTATE 54000), which used to stop its whole shard. 2,048 bytes
 * of key plus the id and the entry's headers (about 2,070 bytes) stay well below that
 * whatever the key's bytes, so no key within the limit can ever make a mark fail. Keys are
 * identifiers (ids, UUIDs, composite names): a key this long is a mistake, and a hash of it
 * is what to send instead.
 *
 * Where it holds: `enqueue` refuses a longer key (`ValidationError`, field `key`); migration
 * 0014 refuses one written by plain SQL (a trigger, SQLSTATE 23514, constraint
 * `messages_key_size`) and leaves such keys out of the blocking index; the relay parks a row
 * with a longer key that is already in the table (`dead` at once, with the reason), never
 * publishing it. The SQL repeats the number as a literal (a partial index's predicate must);
 * test/outbox/key-size.test.ts keeps them equal.
 */
export const MAX_KEY_BYTES = 2048;

/** Bytes of a key as the database counts them (UTF-8). */
export function keyBytes(key: string): number {
  return Buffer.byteLength(key, 'utf8');
}

/** Why a row with a key of `bytes` bytes is parked instead of published (its `last_error`). */
export function keyTooLongMessage(bytes: number): string {
  return (
    `key of ${bytes} bytes exceeds the limit of ${MAX_KEY_BYTES} bytes (MAX_KEY_BYTES): the outbox cannot keep such a key's rows in order, ` +
    'so this row is never published; send the event again with a shorter key (a hash of this one), then skip this row'
  );
}
