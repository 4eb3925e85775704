import { createHash } from 'node:crypto';
import { MAX_KEY_BYTES } from '../outbox/key-size.js';

/**
 * The next rows of one shard, in id order, that may be published now, and no more bytes
 * of them than one transaction carries.
 *
 * - Publishable: pending rows, and failed rows whose retry is due. A pending row is due
 *   whatever its `next_attempt_at` says (an operator who sets a dead row back to pending
 *   means "publish it now"); only a failed row waits for its backoff.
 * - Shard of a row: a stable hash of its key modulo the shard count, so a key always has
 *   one owner; rows without a key spread by id.
 * - Per-key order: a row is blocked while an EARLIER row of its key is failed, dead or
 *   held. Every earlier pending row of the key is either blocked too or comes first in
 *   this very scan (same key, same shard, id order), so a row is never published before
 *   an earlier unsent row of its key, whatever state an operator put that row in. A due
 *   failed row is itself in the result; the rows after it are blocked until it is sent.
 * - Keys over MAX_KEY_BYTES (rows from before migration 0014, or written past its
 *   trigger) are never blocked and so never held: the index of blocking rows leaves them
 *   out, and the relay marks each such row dead at once instead of publishing it (see
 *   `key_bytes`), so no row of such a key is ever published and its order is moot. The
 *   limit is a literal in the text, not a parameter: the planner uses the partial index
 *   of blocking rows only when the query repeats its predicate, in a generic plan too.
 * - Blocked pending rows met by the scan are marked `held` in the same statement, which
 *   takes them out of the index the scan walks (a blocked failed row stays: it is itself a
 *   blocker, which the release must see): however long the backlog behind a blocked key,
 *   each of its rows is read once, not by every claim (releaseHeldSql lets them go).
 *   `$4` bounds the rows of this shard one claim looks at, held ones included (the relay
 *   gives the batch size: looking further costs every claim, and a claim that held rows
 *   is followed by the next one at once).
 * - Set aside: rows of ids `$6` and every row of keys `$7` are left out (rows the database
 *   refused to mark, and the later rows of their keys, for a while: see SetAsideRows).
 * - Size: the payloads of rows beyond the byte budget `$5` are never read. The estimate
 *   (lengths from the row, relay headers at their largest) is an upper bound of the
 *   record's size, so the relay's exact cut keeps what was read. The first row is
 *   always returned, so one too large for any transaction is seen (and marked dead).
 * No row locks are taken for publishing: a shard has one lease holder, and Kafka's
 * transactional fencing stops a former holder that has not noticed yet.
 *
 * Returns one row with `held` and null columns when nothing may be published.
 */
/**
 * Planner settings for the claim's transaction: walk the publishable index in id order.
 * The shard condition (a hash modulo a parameter) has no statistics; with the planner's
 * guess of a tiny match count, a full scan and sort looks cheaper than the index walk that
 * stops at the limit, and the claim would then grow with the table. That plan does not
 * depend on the parameters, so it is made once per connection and kept (the relay runs
 * the claim as a named statement, see claimStatement): planning it each time cost more
 * than running it when few rows wait (1.1 ms against 0.3 ms), on every row's way to Kafka.
 */
export const CLAIM_PLAN_SETTINGS = 'set local enable_seqscan = off; set local enable_bitmapscan = off; set local plan_cache_mode = force_generic_plan';

/** BEGIN of a claim's transaction, with its plan settings. */
export const CLAIM_BEGIN_SQL = `begin; ${CLAIM_PLAN_SETTINGS}`;

/** The claim as a named statement of its text: prepared once per connection (see CLAIM_PLAN_SETTINGS). */
export function claimStatement(q: string): { name: string; text: string } {
  const text = claimBatchSql(q);
  return { name: `outbox-relay-claim-${createHash('sha1').update(text).digest('hex').slice(0, 16)}`, text };
}

export function claimBatchSql(q: string): string {
  return `
with scan as materialized (
  select m.id,
         coalesce(octet_length(m.payload), 0) + coalesce(octet_length(m.key), 0) + octet_length(m.headers::text)
           + coalesce(octet_length(m.event_type), 0) + coalesce(octet_length(m.aggregate_type), 0)
           + coalesce(octet_length(m.aggregate_id), 0) + coalesce(octet_length(m.traceparent), 0) + 512 as bytes,
         m.key is not null and octet_length(m.key) <= ${MAX_KEY_BYTES} and (
           exists (select 1 from ${q}.messages e
                    where e.key = m.key and e.id < m.id and e.state in ('failed', 'dead') and octet_length(e.key) <= ${MAX_KEY_BYTES})
           or exists (select 1 from ${q}.messages e
                       where e.key = m.key and e.id < m.id and e.held)) as blocked
    from ${q}.messages m
   where m.state in ('pending', 'failed')
     and not m.held
     and (m.state = 'pending' or m.next_attempt_at <= now())
     and m.id <> all($6::bigint[])
     and (m.key is null or m.key <> all($7::text[]))
     and (case when m.key is null then m.id % $1::int
               else (hashtext(m.key) & 2147483647) % $1::int end) = $2::int
   order by m.id
   limit $4::int
), held as (
  update ${q}.messages m
     set held = true
    from scan s
   where s.blocked and m.id = s.id and m.state = 'pending'
  returning m.id
), picked as (
  select s.id, row_number() over w as n, sum(s.bytes) over w as running
    from scan s
   where not s.blocked
  window w as (order by s.id)
)
select (select count(*)::int from held) as held,
       m.id, m.topic, m.key, octet_length(m.key) as key_bytes, m.payload, m.headers, m.event_type, m.aggregate_type, m.aggregate_id,
       m.schema_version, m.traceparent, m.created_at, m.attempts, m.state
  from (select 1) one
  left join (picked p join ${q}.messages m on m.id = p.id)
    on p.n <= $3::int and (p.n = 1 or p.running <= $5::bigint)
 order by m.id`;
}

/**
 * Lets held rows go once nothing earlier of their key blocks them: for each key with held
 * rows (a skip scan over the small index of held rows, so the cost follows the number of
 * held keys, not held rows), its held rows before the key's first failed or dead row that
 * is not itself held (none for a key over MAX_KEY_BYTES: such rows block nothing, see
 * claimBatchSql), lowest ids first, at most `$1` in all: a key's rows are released
 * from its first one on, so a released row never has a held one before it, and a release
 * of a million rows is a series of bounded statements. Run by every relay now and then,
 * and after a batch that sent a row that had failed before.
 */
export function releaseHeldSql(q: string): string {
  return `
with recursive keys as (
  (select m.key from ${q}.messages m where m.held and m.key is not null order by m.key limit 1)
  union all
  select (select m.key from ${q}.messages m where m.held and m.key > keys.key order by m.key limit 1)
    from keys
   where keys.key is not null
), barrier as (
  select k.key,
         (select min(e.id) from ${q}.messages e
           where e.key = k.key and e.state in ('failed', 'dead') and not e.held and octet_length(e.key) <= ${MAX_KEY_BYTES}) as first_blocker
    from keys k
   where k.key is not null
), free as (
  select f.id
    from barrier b
    cross join lateral (
      select m.id from ${q}.messages m
       where m.held and m.key = b.key and (b.first_blocker is null or m.id < b.first_blocker)
       order by m.id
       limit $1::int) f
   limit $1::int
), released as (
  update ${q}.messages m set held = false from free where m.id = free.id
  returning m.id
), keyless as (
  -- Only by hand: a row without a key has no order to keep.
  update ${q}.messages m set held = false where m.held and m.key is null
  returning m.id
)
select (select count(*)::int from released) + (select count(*)::int from keyless) as released`;
}

export interface ClaimedRow {
  id: string;
  topic: string;
  key: string | null;
  /** `octet_length(key)`: the database's count, the one its index predicates use. */
  key_bytes: number | null;
  payload: Buffer | null;
  headers: Record<string, string>;
  event_type: string | null;
  aggregate_type: string | null;
  aggregate_id: string | null;
  schema_version: number | null;
  traceparent: string | null;
  created_at: Date;
  attempts: number;
  state: 'pending' | 'failed';
}
