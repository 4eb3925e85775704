-- Opt-in layout for very high volume: outbox.messages partitioned by created_at, so that
-- retention drops whole partitions instead of deleting sent rows one batch at a time.
-- Applied by `outbox-relay migrate --partition-by day|week|month` (migrate's `partitionBy`),
-- after the numbered migrations, in their transaction. `:schema` is replaced by the
-- (quoted) schema name; the unit and the number of partitions made ahead arrive as the
-- settings outbox_relay.partition_unit and outbox_relay.partitions_ahead.
--
-- The existing table becomes the first partition as it is (no row is copied or rewritten),
-- holding everything created before the end of the current unit. Converting reads it
-- under an exclusive lock (a row dated later refuses the conversion; PostgreSQL checks the
-- rows against the partition's bound; one small partial index is built): writers wait for
-- that. Partitions for the following units are made ahead, and a default partition takes
-- any row no partition covers, so an insert never fails for want of a partition.
--
-- What stays the same: columns, defaults, constraints, indexes, triggers (the wake-up, the
-- headers check), the owner, table and column grants, and ids: the identity sequence
-- continues where the old one stood, and every partition keeps a primary key on id (a
-- partitioned table cannot have one that does not include created_at). What does not carry
-- over: storage parameters (autovacuum settings), row-level security policies and
-- publication membership of the old table: set them again on the partitions.

create table :schema.message_partitioning (
  singleton      boolean     primary key default true check (singleton),
  unit           text        not null check (unit in ('day', 'week', 'month')),
  ahead          integer     not null check (ahead between 1 and 366),
  partitioned_at timestamptz not null default now()
);

comment on table :schema.message_partitioning is
  'How messages is partitioned by created_at: partitions of one unit, made `ahead` units in advance by maintain_message_partitions()';

-- Partition bounds are computed on UTC wall-clock time (timestamp without time zone), so
-- neither the session's time zone nor a daylight saving change moves one.
create function :schema.message_partition_floor(unit text, t timestamptz) returns timestamptz
language sql immutable strict as $$
  select date_trunc(unit, t at time zone 'UTC') at time zone 'UTC'
$$;

create function :schema.message_partition_next(unit text, t timestamptz) returns timestamptz
language sql immutable strict as $$
  select (date_trunc(unit, t at time zone 'UTC') + ('1 ' || unit)::interval) at time zone 'UTC'
$$;

-- Gives a partition the table's grants, so that a role allowed on the table may work on the
-- partition directly (the relay's retention deletes from the default partition).
create function :schema.message_partition_grant(part text) returns void
language plpgsql set search_path = pg_catalog, pg_temp as $$
declare
  item record;
begin
  for item in
    select a.privilege_type, case when a.grantee = 0 then 'public' else quote_ident(r.rolname) end as grantee
      from pg_class c, aclexplode(c.relacl) a left join pg_roles r on r.oid = a.grantee
     where c.oid = ':schema.messages'::regclass and a.grantee <> c.relowner
  loop
    execute format('grant %s on :schema.%I to %s', item.privilege_type, part, item.grantee);
  end loop;
end;
$$;

do $$
declare
  unit text := current_setting('outbox_relay.partition_unit');
  ahead integer := current_setting('outbox_relay.partitions_ahead')::integer;
  index_defs text[];
  trigger_defs text[];
  def text;
  item record;
  bound timestamptz;
  last_id bigint;
  legacy text;
  owner name;
begin
  -- Bounds are written into DDL and read back from the catalog as text: in UTC and ISO.
  perform set_config('TimeZone', 'UTC', true), set_config('DateStyle', 'ISO', true);
  insert into :schema.message_partitioning (unit, ahead) values (unit, ahead);
  lock table :schema.messages in access exclusive mode;

  -- Made again on the partitioned table, from their definitions as they stand: the
  -- indexes (but the primary key) and the triggers.
  select coalesce(array_agg(pg_get_indexdef(i.indexrelid) order by c.relname), '{}') into index_defs
    from pg_index i join pg_class c on c.oid = i.indexrelid
   where i.indrelid = ':schema.messages'::regclass and not i.indisprimary;
  select coalesce(array_agg(pg_get_triggerdef(t.oid) order by t.tgname), '{}') into trigger_defs
    from pg_trigger t
   where t.tgrelid = ':schema.messages'::regclass and not t.tgisinternal;
  select r.rolname into owner from pg_class c join pg_roles r on r.oid = c.relowner where c.oid = ':schema.messages'::regclass;
  -- Partitions are made by the table's owner (maintain_message_partitions runs with its rights).
  if not has_schema_privilege(owner, (select relnamespace from pg_class where oid = ':schema.messages'::regclass), 'CREATE') then
    raise exception 'the owner of %.messages (%) needs the CREATE privilege on schema % to make partitions', ':schema', owner, ':schema'
      using errcode = 'insufficient_privilege';
  end if;

  bound := :schema.message_partition_next(unit, now());
  execute format('select greatest(last_value, 0) from %s', pg_get_serial_sequence(':schema.messages', 'id')) into last_id;
  last_id := greatest(last_id, coalesce((select max(id) from :schema.messages), 0));
  legacy := 'messages_before_' || to_char(bound at time zone 'UTC', 'YYYYMMDD');

  -- Every row must be dated before the bound (one written with an explicit created_at may
  -- not be): checked once, as a constraint the attach below then relies on instead of
  -- reading the table again; a row that fails it is named.
  begin
    execute format('alter table :schema.messages add constraint messages_before_bound check (created_at < %L)', bound);
  exception when check_violation then
    select id, created_at into item from :schema.messages where not (created_at < bound) order by id limit 1;
    raise exception '%.messages has rows created after % (the first: id % at %): partitioning needs every row before it; correct their created_at or convert later',
      ':schema', bound, item.id, item.created_at using errcode = 'check_violation';
  end;

  execute format('alter table :schema.messages rename to %I', legacy);
  for item in
    select c.relname from pg_index i join pg_class c on c.oid = i.indexrelid
     where i.indrelid = format(':schema.%I', legacy)::regclass
  loop
    execute format('alter index :schema.%I rename to %I', item.relname, left(legacy || '_' || item.relname, 63));
  end loop;
  for item in
    select tgname from pg_trigger where tgrelid = format(':schema.%I', legacy)::regclass and not tgisinternal
  loop
    execute format('drop trigger %I on :schema.%I', item.tgname, legacy);
  end loop;
  execute format('alter table :schema.%I alter column id drop identity', legacy);

  execute format(
    'create table :schema.messages (like :schema.%I including defaults including constraints including comments including storage including compression) partition by range (created_at)',
    legacy);
  if owner <> current_user then
    execute format('alter table :schema.messages owner to %I', owner);
  end if;
  -- Always generated: a partition's primary key cannot see the others', so an id given by
  -- hand could repeat one; with ids only from the sequence they stay unique.
  execute format('alter table :schema.messages alter column id add generated always as identity (start with %s)', last_id + 1);
  foreach def in array index_defs loop execute def; end loop;
  foreach def in array trigger_defs loop execute def; end loop;
  -- Every state but `sent` has a partial index, so the rows an expired partition must keep
  -- are found without reading the partition (see maintain_message_partitions).
  create index messages_skipped_idx on :schema.messages (id) where state = 'skipped';

  -- Who could use the table (or some of its columns) still can, with the same grant option.
  for item in
    select a.privilege_type, a.is_grantable,
           case when a.grantee = 0 then 'public' else quote_ident(r.rolname) end as grantee
      from pg_class c, aclexplode(c.relacl) a left join pg_roles r on r.oid = a.grantee
     where c.oid = format(':schema.%I', legacy)::regclass and a.grantee <> c.relowner
  loop
    execute format('grant %s on :schema.messages to %s%s', item.privilege_type, item.grantee,
                   case when item.is_grantable then ' with grant option' else '' end);
  end loop;
  for item in
    select a.privilege_type, a.is_grantable, att.attname,
           case when a.grantee = 0 then 'public' else quote_ident(r.rolname) end as grantee
      from pg_attribute att, aclexplode(att.attacl) a left join pg_roles r on r.oid = a.grantee
     where att.attrelid = format(':schema.%I', legacy)::regclass and att.attacl is not null
  loop
    execute format('grant %s (%I) on :schema.messages to %s%s', item.privilege_type, item.attname, item.grantee,
                   case when item.is_grantable then ' with grant option' else '' end);
  end loop;
  comment on table :schema.messages is
    'Transactional outbox: rows written with business data, published to Kafka by outbox-relay (partitioned by created_at)';

  alter table :schema.messages drop constraint messages_before_bound;
  execute format('alter table :schema.messages attach partition :schema.%I for values from (minvalue) to (%L)', legacy, bound);
  execute format('alter table :schema.%I drop constraint messages_before_bound', legacy);
  create table :schema.messages_default partition of :schema.messages default;
  alter table :schema.messages_default add primary key (id);
  perform :schema.message_partition_grant('messages_default');
end;
$$;

-- The partitions of messages with their bounds (read from the catalog, so partitions made
-- or dropped by hand are seen too). The default partition has no bounds.
create function :schema.message_partition_bounds()
returns table (partition_name text, lower_bound timestamptz, upper_bound timestamptz, is_default boolean)
language sql stable
set "TimeZone" = 'UTC' set "DateStyle" = 'ISO'
as $$
  select c.relname::text,
         case when b like 'FOR VALUES FROM (MINVALUE)%' then '-infinity'::timestamptz
              else substring(b from 'FROM \(''([^'']+)''\)')::timestamptz end,
         substring(b from 'TO \(''([^'']+)''\)')::timestamptz,
         b = 'DEFAULT'
    from pg_inherits i
    join pg_class c on c.oid = i.inhrelid
    cross join lateral pg_get_expr(c.relpartbound, c.oid) b
   where i.inhparent = ':schema.messages'::regclass
$$;

-- Keeps the partitions, one step at a time: a run makes at most `max_steps` partitions or
-- drops (the relay's runs, one), so that no lock is held long. One row per partition acted
-- on: `created`, `dropped`, `kept` (an expired partition holding rows to keep, or a range
-- left to the default partition), or `busy` (a lock was not free within half a second: the
-- run stops there, and the next one goes on from there), with a detail.
--
-- - Makes the partitions of the current unit and of the `ahead` units after it, from the
--   end of the last one (ranges never overlap). Each is made as a table of its own and then
--   attached, which locks the table only against other DDL (writers go on); PostgreSQL
--   meanwhile reads the default partition under its lock for rows of the range. A range of
--   which the default partition holds rows (the partitions had run out) is left to it.
-- - With `keep` given, drops every partition whose range ended more than `keep` before
--   `as_of` and which holds no row to keep: none not sent (pending, failed, held, dead,
--   skipped) and none sent within the retention period. Every state but `sent` has a
--   partial index, so the check reads no partition; it is made again under the table's
--   lock before the drop, so a row committed meanwhile is seen. A partition kept for its
--   rows stays (its sent rows are deleted row by row by the relay's retention, see
--   deleteExpiredInKeptPartitionsSql) until they are sent, repaired or removed.
--
-- Runs only at READ COMMITTED (each statement must see what committed before it). `as_of`
-- is now() but in tests; callers other than the owner use maintain_message_partitions(keep),
-- which runs with the owner's rights.
create function :schema.maintain_message_partitions_as_of(keep interval, as_of timestamptz, max_steps integer default 1)
returns table (action text, partition_name text, detail text)
language plpgsql
set search_path = pg_catalog, pg_temp
set "TimeZone" = 'UTC' set "DateStyle" = 'ISO'
set lock_timeout = '500ms'
set enable_seqscan = off
as $$
#variable_conflict use_column
declare
  cfg record;
  lo timestamptz;
  hi timestamptz;
  target timestamptz;
  cutoff timestamptz;
  part record;
  part_name text;
  to_keep boolean;
  steps integer := 0;
  owner name := (select r.rolname from pg_class c join pg_roles r on r.oid = c.relowner where c.oid = ':schema.messages'::regclass);
  has_rows_to_keep text := 'select exists (select 1 from :schema.%1$I where state in (''pending'', ''failed'') and not held)
                               or exists (select 1 from :schema.%1$I where held)
                               or exists (select 1 from :schema.%1$I where state = ''dead'')
                               or exists (select 1 from :schema.%1$I where state = ''skipped'')
                               or exists (select 1 from :schema.%1$I where state = ''sent'' and sent_at > $1)';
begin
  if current_setting('transaction_isolation') <> 'read committed' then
    raise exception 'maintain_message_partitions runs at READ COMMITTED only (this transaction is %)', current_setting('transaction_isolation')
      using errcode = 'invalid_transaction_state';
  end if;
  if keep is not null and keep < interval '1 minute' then
    raise exception 'keep must be at least a minute, got %', keep using errcode = 'invalid_parameter_value';
  end if;
  select * into cfg from :schema.message_partitioning;
  if not found then
    raise exception '%.messages is not partitioned', ':schema' using errcode = 'undefined_object';
  end if;
  target := :schema.message_partition_floor(cfg.unit, as_of);
  for i in 0 .. cfg.ahead loop
    target := :schema.message_partition_next(cfg.unit, target);
  end loop;
  select max(upper_bound) into lo from :schema.message_partition_bounds() where not is_default;
  lo := greatest(:schema.message_partition_floor(cfg.unit, as_of), coalesce(lo, '-infinity'));
  while lo < target loop
    if steps >= max_steps then return; end if;
    hi := :schema.message_partition_next(cfg.unit, lo);
    if not hi > lo then
      raise exception 'partition bounds did not advance at % (unit %)', lo, cfg.unit;
    end if;
    part_name := 'messages_p' || to_char(lo at time zone 'UTC', 'YYYYMMDD');
    if to_regclass(format(':schema.%I', part_name)) is not null then
      action := 'kept'; partition_name := part_name;
      detail := 'a relation of this name exists and is not this range''s partition: the range is left to messages_default';
      return next;
    else
      begin
        execute format('create table :schema.%I (like :schema.messages including defaults including constraints)', part_name);
        execute format('alter table :schema.%I add primary key (id)', part_name);
        if owner <> current_user then
          execute format('alter table :schema.%I owner to %I', part_name, owner);
        end if;
        execute format('alter table :schema.messages attach partition :schema.%I for values from (%L) to (%L)', part_name, lo, hi);
        perform :schema.message_partition_grant(part_name);
        steps := steps + 1;
        action := 'created'; partition_name := part_name; detail := null;
        return next;
      exception
        when check_violation then
          action := 'kept'; partition_name := part_name; detail := 'rows of this range are in messages_default, which keeps them';
          return next;
        when lock_not_available then
          action := 'busy'; partition_name := part_name; detail := 'a lock was not free; made at the next run';
          return next;
          return;
      end;
    end if;
    lo := hi;
  end loop;

  if keep is null then return; end if;
  cutoff := as_of - keep;
  for part in
    select * from :schema.message_partition_bounds()
     where not is_default and upper_bound <= cutoff order by upper_bound
  loop
    if steps >= max_steps then return; end if;
    begin
      execute format(has_rows_to_keep, part.partition_name) using cutoff into to_keep;
      if not to_keep then
        lock table :schema.messages in access exclusive mode;
        execute format(has_rows_to_keep, part.partition_name) using cutoff into to_keep;
      end if;
      if to_keep then
        action := 'kept'; partition_name := part.partition_name; detail := 'holds rows not sent, or sent within the retention period';
      else
        execute format('drop table :schema.%I', part.partition_name);
        steps := steps + 1;
        action := 'dropped'; partition_name := part.partition_name; detail := null;
      end if;
      return next;
    exception
      when lock_not_available then
        action := 'busy'; partition_name := part.partition_name; detail := 'the table was locked; dropped at the next run';
        return next;
        return;
      when dependent_objects_still_exist then
        action := 'kept'; partition_name := part.partition_name; detail := 'other objects (a view?) depend on it: drop them to let it go';
        return next;
      when undefined_table then null; -- dropped by a concurrent run
    end;
  end loop;
end;
$$;

-- What the relay calls: the run as of now, with the owner's rights (so that a relay role
-- without DDL rights may keep the partitions). Granted to nobody but the owner by default:
-- grant EXECUTE to the relay's role.
create function :schema.maintain_message_partitions(keep interval default null)
returns table (action text, partition_name text, detail text)
language sql security definer
set search_path = pg_catalog, pg_temp
as $$
  select * from :schema.maintain_message_partitions_as_of(keep, now())
$$;

-- Only the owner may run them (whatever the schema's default privileges granted), or read
-- and change the settings: a grant to the relay's role is an explicit choice.
do $$
declare
  item record;
begin
  for item in
    select p.oid::regprocedure::text as fn, case when a.grantee = 0 then 'public' else quote_ident(r.rolname) end as grantee
      from pg_proc p, aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a left join pg_roles r on r.oid = a.grantee
     where p.oid in (':schema.maintain_message_partitions(interval)'::regprocedure,
                     ':schema.maintain_message_partitions_as_of(interval, timestamptz, integer)'::regprocedure,
                     ':schema.message_partition_grant(text)'::regprocedure)
       and a.grantee <> p.proowner
  loop
    execute format('revoke all on function %s from %s', item.fn, item.grantee);
  end loop;
  for item in
    select distinct case when a.grantee = 0 then 'public' else quote_ident(r.rolname) end as grantee
      from pg_class c, aclexplode(c.relacl) a left join pg_roles r on r.oid = a.grantee
     where c.oid = ':schema.message_partitioning'::regclass and a.grantee <> c.relowner
  loop
    execute format('revoke all on :schema.message_partitioning from %s', item.grantee);
  end loop;
end;
$$;

-- The table's owner owns what the layout adds, and the function that makes and drops
-- partitions for others runs with its rights.
do $$
declare
  owner name := (select r.rolname from pg_class c join pg_roles r on r.oid = c.relowner where c.oid = ':schema.messages'::regclass);
begin
  if owner <> current_user then
    execute format('alter table :schema.messages_default owner to %I', owner);
    execute format('alter table :schema.message_partitioning owner to %I', owner);
    execute format('alter function :schema.maintain_message_partitions(interval) owner to %I', owner);
    execute format('alter function :schema.maintain_message_partitions_as_of(interval, timestamptz, integer) owner to %I', owner);
    execute format('alter function :schema.message_partition_grant(text) owner to %I', owner);
    execute format('alter function :schema.message_partition_bounds() owner to %I', owner);
    execute format('alter function :schema.message_partition_floor(text, timestamptz) owner to %I', owner);
    execute format('alter function :schema.message_partition_next(text, timestamptz) owner to %I', owner);
  end if;
end;
$$;

select count(*) from :schema.maintain_message_partitions_as_of(null, now(), 1000);
