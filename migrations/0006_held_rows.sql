-- Rows held back behind a blocked key, so that claims do not walk them.
-- `:schema` is replaced by the (quoted) schema name when migrations run.

-- A row whose key has an earlier failed or dead row cannot be published before that row.
-- Without this flag every claim of its shard would read it again and skip it: a million
-- rows queued behind one dead row made each claim walk a million rows. A claim that meets
-- such a row sets `held`, which takes it out of the index of publishable rows; the relay
-- clears the flag (in id order, from the key's first row) once nothing earlier of its key
-- blocks it. `held` is an optimisation only: the claim still checks, for every row it
-- returns, that no earlier row of its key is failed, dead or held, so a flag set or
-- cleared by hand can delay a row but never reorder a key.
alter table :schema.messages add column held boolean not null default false;

drop index :schema.messages_publishable_idx;
create index messages_publishable_idx on :schema.messages (id)
  where state in ('pending', 'failed') and not held;

-- Held rows by key: "is an earlier row of this key held?" and the release, key by key.
create index messages_held_idx on :schema.messages (key, id) where held;
