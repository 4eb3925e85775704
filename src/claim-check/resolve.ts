import { AbortError } from 'p-retry';
import { OutboxError } from '../errors.js';
import type { BatchHandler, RecordHandler } from '../consumer/handler.js';
import type { ConsumedRecord } from '../consumer/record.js';
import { CLAIM_CHECK_HEADER, decodeReference, fetchBody, type ClaimCheckStore } from './store.js';

/**
 * Claim-checked records resolved before a handler sees them: a record carrying header
 * `outbox-claim-check` gets its body from the named store, checked against the
 * reference's size and sha256, as its `value` (the reference stays on `claimCheck`). A
 * reference that cannot be resolved (no such store given, body gone, checksum mismatch)
 * fails the record without retries, so it goes to the failure policy at once; a store that
 * does not answer fails the attempt, which is retried. Without stores, records are handed
 * over as they are, with `claimCheck` set.
 */
export function claimCheckResolver(stores: ClaimCheckStore | readonly ClaimCheckStore[] | undefined): (record: ConsumedRecord) => Promise<ConsumedRecord> {
  const list: readonly ClaimCheckStore[] = stores === undefined ? [] : Array.isArray(stores) ? stores : [stores as ClaimCheckStore];
  const byName = new Map(list.map((store) => [store.name, store] as const));
  return async (record) => {
    if (record.headers.raw[CLAIM_CHECK_HEADER] === undefined) return record;
    const reference = permanent(() => decodeReference(record.value));
    if (list.length === 0) return { ...record, claimCheck: reference };
    let body: Buffer;
    try {
      body = await fetchBody(byName, reference);
    } catch (err) {
      if (err instanceof OutboxError && err.code === 'CLAIM_CHECK_INVALID') throw new AbortError(err);
      throw err;
    }
    return { ...record, value: body, claimCheck: reference };
  };
}

/** The consumer's handler with claim-checked records resolved first (see {@link claimCheckResolver}). */
export function withClaimCheck(handler: RecordHandler, stores: ClaimCheckStore | readonly ClaimCheckStore[] | undefined): RecordHandler {
  const resolve = claimCheckResolver(stores);
  return async (record, tx) => handler(await resolve(record), tx);
}

/** The consumer's batch handler with claim-checked records resolved first (see {@link claimCheckResolver}). */
export function withClaimCheckBatch(handler: BatchHandler, stores: ClaimCheckStore | readonly ClaimCheckStore[] | undefined): BatchHandler {
  const resolve = claimCheckResolver(stores);
  return async (records, tx) => handler(await Promise.all(records.map(resolve)), tx);
}

function permanent<T>(fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    throw new AbortError(err as Error);
  }
}
