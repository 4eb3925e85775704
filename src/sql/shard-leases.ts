import { serving } from './relay-groups.js';

// Shard leases. A lease is a row in relay_shards owned by one relay until it expires; each
// take-over bumps the fencing token. Membership rows let relays divide shards evenly.

/** Creates the shard rows of a relay group if missing. */
export const ensureShardsSql = (q: string) => `
insert into ${q}.relay_shards (relay_group, shard)
select $1::text, s from generate_series(0, $2::int - 1) s
on conflict do nothing`;

/**
 * Heartbeat; returns how many relays of the group are alive, and whether the group still
 * serves the outbox (a relay of a group being taken over leaves instead).
 */
export const heartbeatSql = (q: string) => `
with beat as (
  insert into ${q}.relay_members (relay_group, relay_id) values ($1::text, $2::text)
  on conflict (relay_group, relay_id) do update set heartbeat_at = now()
)
select count(*)::int + 1 as live,
       (select ${serving(q)}) as serving,
       (select g.successor from ${q}.relay_groups g where g.relay_group = $1::text) as successor
  from ${q}.relay_members
 where relay_group = $1::text and relay_id <> $2::text
   and heartbeat_at > now() - $3::bigint * interval '1 millisecond'`;

/**
 * Extends the leases this relay still holds under its tokens; returns those it kept. An
 * expired lease is not revived even if nobody took it: its worker may already have given
 * the shard up, so it is reported lost and acquired afresh (new token, new worker).
 */
export const renewLeasesSql = (q: string) => `
update ${q}.relay_shards r
   set lease_expires_at = now() + $3::bigint * interval '1 millisecond'
  from unnest($4::int[], $5::bigint[]) as mine(shard, token)
 where r.relay_group = $1::text and r.owner = $2::text
   and r.shard = mine.shard and r.fencing_token = mine.token
   and r.lease_expires_at > now()
   and ${serving(q)}
returning r.shard`;

/**
 * Takes up to $4 free or expired shards. SKIP LOCKED lets relays starting together each
 * take different shards instead of queueing on the same rows.
 */
export const acquireLeasesSql = (q: string) => `
update ${q}.relay_shards r
   set owner = $2::text, fencing_token = r.fencing_token + 1,
       lease_expires_at = now() + $3::bigint * interval '1 millisecond', updated_at = now()
 where (r.relay_group, r.shard) in (
   select relay_group, shard from ${q}.relay_shards
    where relay_group = $1::text and shard < $5::int
      and (owner is null or lease_expires_at < now())
      and ${serving(q)}
    order by shard
    limit $4::int
    for update skip locked)
returning r.shard, r.fencing_token::text as token`;

/** Gives shards back (on stop or to rebalance). */
export const releaseLeasesSql = (q: string) => `
update ${q}.relay_shards
   set owner = null, lease_expires_at = null, updated_at = now()
 where relay_group = $1::text and owner = $2::text and shard = any($3::int[])`;

export const leaveGroupSql = (q: string) => `
delete from ${q}.relay_members where relay_group = $1::text and relay_id = $2::text`;

/** Forgets members silent for a long time, so they do not count as live. */
export const pruneMembersSql = (q: string) => `
delete from ${q}.relay_members
 where relay_group = $1::text and heartbeat_at < now() - $2::bigint * interval '1 millisecond'`;

/** Does this relay still hold the shard under this token? Checked before every take-over. */
export const holdsLeaseSql = (q: string) => `
select 1 from ${q}.relay_shards
 where relay_group = $1::text and shard = $2::int and owner = $3::text
   and fencing_token = $4::bigint and lease_expires_at > now()
   and ${serving(q)}`;

/**
 * What readiness asks the database in one round trip: the newest migration applied, whether
 * group \`$1\` still serves the outbox, and whether relay \`$2\`'s heartbeat is fresher than
 * \`$3\` ms (its membership, which divides the shards, is live).
 */
export const readinessSql = (q: string) => `
select (select max(id) from ${q}.migrations)::int as migrated,
       ${serving(q)} as serving,
       exists (select 1 from ${q}.relay_members
                where relay_group = $1::text and relay_id = $2::text
                  and heartbeat_at > now() - $3::bigint * interval '1 millisecond') as member`;
