// The relay groups of an outbox: registration, the group serving it, a take-over's
// successor (see relay-take-over.ts).

/**
 * Registers the relay group on first use (a no-op afterwards). The first group of an outbox
 * serves it; a later one starts inactive. Two groups registering at once on an empty
 * outbox cannot both become active: the unique index refuses the second (23505), and its
 * relay registers again and finds the first one active.
 */
export const registerGroupSql = (q: string) => `
insert into ${q}.relay_groups (relay_group, shards, checkpoint_topic, active)
select $1::text, $2::int, $3::text, not exists (select 1 from ${q}.relay_groups where active)
on conflict (relay_group) do nothing`;

/** The group serving the outbox, if any, and one being taken over by another. */
export const activeGroupSql = (q: string) => `
select relay_group, successor from ${q}.relay_groups where active`;

/** "The group is active and nobody is taking over from it": its relays may hold leases. */
export const serving = (q: string) => `exists (
     select 1 from ${q}.relay_groups g where g.relay_group = $1::text and g.active and g.successor is null)`;

/**
 * The group's fixed settings. A separate statement on purpose: when two relays register a
 * new group at once, the loser's INSERT waits for the winner and does nothing, and only a
 * statement started after that sees the winner's row (a SELECT in the same statement would
 * use the older snapshot and find nothing).
 */
export const readGroupSql = (q: string) => `
select shards, instance_id::text as instance_id, checkpoint_topic, active, successor, retired_at
  from ${q}.relay_groups where relay_group = $1::text`;
