-- Writers need nothing but INSERT on messages (see `outbox-relay roles`).
-- `:schema` is replaced by the (quoted) schema name when migrations run.
--
-- The insert trigger reads relay_members (whether a member waits for rows, migration 0012).
-- A trigger function runs with the rights of the role that inserts, so a writer would need
-- to read the relay's membership table, which it has no business reading. It runs with the
-- owner's rights instead (SECURITY DEFINER), with a search_path of its own so that the
-- inserting session's cannot redirect what it calls; every name it uses is qualified.
-- PostgreSQL calls a trigger function only as a trigger (and asks for no EXECUTE privilege
-- when it fires one), so no one needs to execute it otherwise: nobody but the owner may.
create or replace function :schema.notify_messages() returns trigger
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
begin
  if exists (select 1 from :schema.relay_members where idle) then
    perform pg_notify(tg_table_schema || '.messages', '');
  end if;
  return null;
end;
$$;

revoke all on function :schema.notify_messages() from public;
