// Statements of a take-over of the outbox by another relay group (see take-over.ts).

/** Session advisory lock serialising take-overs of one outbox schema; tried, never waited for. */
export const takeOverLockSql = () => `select pg_try_advisory_lock(hashtext($1::text)) as locked`;
export const takeOverUnlockSql = () => `select pg_advisory_unlock(hashtext($1::text))`;

/** Names the successor of the serving group; no row when `$1` does not serve or another successor is named. */
export const nameSuccessorSql = (q: string) => `
update ${q}.relay_groups set successor = $2::text
 where relay_group = $1::text and active and (successor is null or successor = $2::text)`;

/** Live relays (heartbeat within `$2` ms) and unexpired leases of a group. */
export const groupActivitySql = (q: string) => `
select (select count(*)::int from ${q}.relay_members
         where relay_group = $1::text and heartbeat_at > now() - $2::bigint * interval '1 millisecond') as live,
       (select count(*)::int from ${q}.relay_shards
         where relay_group = $1::text and owner is not null and lease_expires_at > now()) as leased`;

/** First of the switch's statements: the unique index allows one active group. */
export const retireGroupSql = (q: string) => `
update ${q}.relay_groups set active = false, retired_at = now() where relay_group = $1::text`;

export const activateGroupSql = (q: string) => `
update ${q}.relay_groups set active = true, successor = null, retired_at = null where relay_group = $1::text`;

/** The retired group's leases and members are void: a relay of it that wakes up holds nothing. */
export const releaseGroupShardsSql = (q: string) => `
with shards as (
  update ${q}.relay_shards
     set owner = null, lease_expires_at = null, fencing_token = fencing_token + 1, updated_at = now()
   where relay_group = $1::text
)
delete from ${q}.relay_members where relay_group = $1::text`;

/** Makes a group active when no group is (an outbox whose groups were all retired by hand). */
export const activateIfNoneSql = (q: string) => `
update ${q}.relay_groups set active = true
 where relay_group = $1::text and retired_at is null
   and not exists (select 1 from ${q}.relay_groups where active)`;
