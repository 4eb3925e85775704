import { claimInboxSql, unclaimInboxSql } from '../sql/consumer-inbox.js';
import type { ApplyContext } from './batch.js';
import type { ConsumedRecord } from './record.js';
import type { BatchConnection } from './transaction.js';

// The inbox inside a batch transaction: the outbox ids (by source) applied already are
// skipped, whatever their offsets.

/** Claims in the inbox: records claimed now, and records already applied (or earlier in this batch with the same id). */
export interface Claims {
  claimed: ConsumedRecord[];
  duplicates: Set<ConsumedRecord>;
}

/**
 * Claims the outbox ids of `records` in one statement (see claimInboxSql). Records without
 * a source or an outbox id header, or all of them with the inbox off, are not claimed:
 * their offsets alone decide. A record whose (source, id) comes again later in the batch
 * is claimed once, for its first occurrence.
 */
export async function claimInbox(ctx: ApplyContext, connection: BatchConnection, records: ConsumedRecord[]): Promise<Claims> {
  const claims: Claims = { claimed: [], duplicates: new Set() };
  if (!ctx.inbox) return claims;
  const byId = new Map<string, ConsumedRecord>();
  for (const record of records) {
    const { source, outboxId } = record.headers;
    if (source === undefined || outboxId === undefined) continue;
    const id = JSON.stringify([source, outboxId]);
    if (byId.has(id)) claims.duplicates.add(record);
    else byId.set(id, record);
  }
  if (byId.size === 0) return claims;
  const candidates = [...byId.values()];
  const { rows } = await connection.query(claimInboxSql(ctx.q), [
    ctx.groupId,
    candidates[0]!.topic,
    candidates[0]!.partition,
    ctx.topicId ?? null,
    candidates.map((r) => r.headers.source),
    candidates.map((r) => r.headers.outboxId),
    candidates.map((r) => r.offset),
  ]);
  const won = new Set((rows as { source: string; outbox_id: string }[]).map((r) => JSON.stringify([r.source, r.outbox_id])));
  for (const [id, record] of byId) {
    if (won.has(id)) claims.claimed.push(record);
    else claims.duplicates.add(record);
  }
  return claims;
}

export async function unclaimInbox(ctx: ApplyContext, connection: BatchConnection, records: ConsumedRecord[]): Promise<void> {
  if (records.length === 0) return;
  await connection.query(unclaimInboxSql(ctx.q), [ctx.groupId, records.map((r) => r.headers.source), records.map((r) => r.headers.outboxId)]);
}
