import type { ProduceRecord } from '../kafka/producer.js';
import { tooLargeMessage } from '../kafka/record-size.js';
import { keyTooLongMessage, MAX_KEY_BYTES } from '../outbox/key-size.js';
import type { ClaimedRow } from '../sql/outbox-claim.js';
import { invalidHeaders, recordSize } from './records.js';

/** A claimed row with the record it becomes. */
export interface Item {
  row: ClaimedRow;
  record: ProduceRecord;
}

/** A row that is not published now: marked failed (tried again after its backoff) or dead. */
export interface SetAsideRow {
  row: ClaimedRow;
  reason: string;
  dead: boolean;
}

export interface Cut {
  /** In claim order; marked before anything is published. */
  setAside: SetAsideRow[];
  /** Due retries, each to go alone in a transaction of its own, first. */
  retries: Item[];
  /** The rows that go together in one transaction. */
  items: Item[];
}

export interface CutLimits {
  /** The largest record the relay sends (see the one size rule). */
  maxRecordBytes: number;
  /** What one transaction carries at most. */
  maxBatchBytes: number;
}

/**
 * What one claim's rows (in id order) become, without changing per-key order:
 * - a row whose key is too long for the per-key-order indexes, or whose headers are not all
 *   strings, or whose record is larger than `maxRecordBytes`: dead at once (no retry can
 *   help); a row of an unknown topic: failed. Later rows of such a key wait for the next
 *   claim (the too-long key excepted: every row of it is dead, so none overtakes another).
 * - a due retry (a row that failed before) goes alone and first; one behind an earlier row
 *   of its key in this claim (pending again after a repair) waits, and so does its key; the
 *   later rows of a retry's key wait until it is sent.
 * - the others go together, cut before `maxBatchBytes` (at least one row): a prefix, so the
 *   rest goes in the next batch and per-key order holds.
 * `topics` says which topics exist (with the broker's error for one that does not).
 */
export function cutBatch(
  rows: readonly ClaimedRow[],
  topics: ReadonlyMap<string, { exists: boolean; error?: string | undefined }>,
  limits: CutLimits,
  toRecord: (row: ClaimedRow) => ProduceRecord,
): Cut {
  const cut: Cut = { setAside: [], retries: [], items: [] };
  const blockedKeys = new Set<string>();
  /** Keys of rows taken into this batch: a retry of such a key must not go first. */
  const batchKeys = new Set<string>();
  const block = (row: ClaimedRow) => {
    if (row.key !== null) blockedKeys.add(row.key);
  };
  let bytes = 0;
  for (const row of rows) {
    if (row.key !== null && blockedKeys.has(row.key)) continue;
    // A key too long for the indexes that keep per-key order (a row from before migration
    // 0014, or written past its trigger): dead at once, never published. Every row of that
    // key is, so none can overtake another; and the index of blocking rows leaves such keys
    // out, so this mark cannot fail for the key's size.
    if (row.key_bytes !== null && row.key_bytes > MAX_KEY_BYTES) {
      cut.setAside.push({ row, reason: keyTooLongMessage(row.key_bytes), dead: true });
      continue;
    }
    const badHeaders = invalidHeaders(row.headers);
    if (badHeaders !== undefined) {
      cut.setAside.push({ row, reason: badHeaders, dead: true });
      block(row);
      continue;
    }
    const record = toRecord(row);
    const size = recordSize(record);
    if (row.state !== 'failed' && cut.items.length > 0 && bytes + size > limits.maxBatchBytes) break;
    if (size > limits.maxRecordBytes) {
      cut.setAside.push({ row, reason: tooLargeMessage(size, limits.maxRecordBytes), dead: true });
      block(row);
      continue;
    }
    const topic = topics.get(row.topic);
    if (!topic?.exists) {
      cut.setAside.push({ row, reason: `unknown topic ${row.topic}: ${topic?.error ?? 'not found in broker metadata'}`, dead: false });
      block(row);
      continue;
    }
    if (row.state === 'failed') {
      if (row.key !== null && batchKeys.has(row.key)) {
        block(row);
        continue;
      }
      cut.retries.push({ row, record });
      block(row);
      continue;
    }
    cut.items.push({ row, record });
    if (row.key !== null) batchKeys.add(row.key);
    bytes += size;
  }
  return cut;
}
