-- Writers notify the relay only while one of its members waits for rows.
--
-- PostgreSQL serialises the commits of transactions that issued NOTIFY (a global lock taken
-- at commit), which slows down many concurrent writers. A relay that is busy draining does
-- not need to be woken: its next claim comes at once. So every member says whether it is
-- `idle` (some shard worker of it waits for rows), and the trigger notifies only then. A
-- member that turns idle catches up on the rows of writers that read the flag before it
-- changed (see the relay's Wakeup). Members of an older relay never clear the flag: writers
-- notify them as before.
alter table :schema.relay_members add column idle boolean not null default true;

create or replace function :schema.notify_messages() returns trigger
language plpgsql as $$
begin
  if exists (select 1 from :schema.relay_members where idle) then
    perform pg_notify(tg_table_schema || '.messages', '');
  end if;
  return null;
end;
$$;
