-- Opt-in layout for very high volume: outbox.messages partitioned by created_at, so that
-- retention drops whole partitions instead of deleting sent rows one batch at a time.
-- Applied by `outbox-relay migrate --partition-by day|week|month` (migrate's `partitionBy`),
-- after the numbered migrations, in their transaction. `:schema` is replaced by the
-- (quoted) schema name; the unit and the number of partitions made ahead arrive as the
-- settings outbox_relay.partition_unit and outbox_relay.partitions_ahead.
--
-- The existing table becomes the first partition as it is (no row is copied or rewritten),
-- holding everything created before the end of the current unit. Converting reads it twice
-- under an exclusive lock (rows dated later move out; PostgreSQL checks the rest against the
-- partition's bound) and builds one small partial index: writers wait for that. Partitions
-- for the following units are made ahead, and a default partition takes any row no
-- partition covers, so an insert never fails for want of a partition.
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

  -- Rows dated after the bound (an explicit created_at) move to the partitioned table
  -- once it exists, with their ids.
  create temp table outbox_relay_later (like :schema.messages) on commit drop;
  with moved as (delete from :schema.messages where not (created_at < bound) returning *)
  insert into outbox_relay_later select * from moved;

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
  execute format('alter table :schema.messages alter column id add generated by default as identity (start with %s)', last_id + 1);
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

  execute format('alter table :schema.messages attach partition :schema.%I for values from (minvalue) to (%L)', legacy, bound);
  create table :schema.messages_default partition of :schema.messages default;
  alter table :schema.messages_default add primary key (id);
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

-- Keeps the partitions; one row per partition acted on: `created`, `dropped` or `busy`
-- (its lock was not free within half a second: tried again at the next run), with a detail.
--
-- - Makes the partitions of the current unit and of the `ahead` units after it, from the
--   end of the last one (ranges never overlap). Rows of a new partition's range that the
--   default partition took (the partitions had run out) move into it.
-- - With `keep` given, drops every partition whose range ended more than `keep` before
--   `as_of`. The rows it must keep (every row not sent: pending, failed, held, dead,
--   skipped; and rows sent within the retention period) move to the default partition
--   first, with their ids, in the same transaction; a partition with more than 10,000 such
--   rows (an outage's backlog) is left for later, reported `busy`.
--
-- Both take the table's lock for an instant (writers wait that long), and only when there
-- is something to do, which makes a run without anything to do free. It runs with its
-- owner's rights (the table's owner), so a relay role without DDL rights may run it.
-- `as_of` is now() but in tests. The relay runs it (see README "Partitioned outbox").
create function :schema.maintain_message_partitions(keep interval default null, as_of timestamptz default now())
returns table (action text, partition_name text, detail text)
language plpgsql security definer
set search_path = pg_catalog, pg_temp
set "TimeZone" = 'UTC' set "DateStyle" = 'ISO'
set lock_timeout = '500ms'
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
  moved bigint;
  to_keep text := 'select id from :schema.%1$I where state in (''pending'', ''failed'') and not held
                   union select id from :schema.%1$I where held
                   union select id from :schema.%1$I where state = ''dead''
                   union select id from :schema.%1$I where state = ''skipped''
                   union select id from :schema.%1$I where state = ''sent'' and sent_at > $1';
begin
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
    hi := :schema.message_partition_next(cfg.unit, lo);
    if not hi > lo then
      raise exception 'partition bounds did not advance at % (unit %)', lo, cfg.unit;
    end if;
    part_name := 'messages_p' || to_char(lo at time zone 'UTC', 'YYYYMMDD');
    begin
      lock table :schema.messages in access exclusive mode;
      create temp table if not exists outbox_relay_moving (like :schema.messages) on commit drop;
      with taken as (delete from :schema.messages_default where created_at >= lo and created_at < hi returning *)
      insert into pg_temp.outbox_relay_moving select * from taken;
      get diagnostics moved = row_count;
      execute format('create table :schema.%I partition of :schema.messages for values from (%L) to (%L)', part_name, lo, hi);
      execute format('alter table :schema.%I add primary key (id)', part_name);
      insert into :schema.messages select * from pg_temp.outbox_relay_moving;
      truncate pg_temp.outbox_relay_moving;
      action := 'created'; partition_name := part_name;
      detail := case when moved > 0 then format('%s of its range moved in from messages_default', case when moved = 1 then '1 row' else moved || ' rows' end) end;
      return next;
    exception
      when duplicate_table then null; -- made by a concurrent run
      when lock_not_available then
        action := 'busy'; partition_name := part_name; detail := 'the table was locked; made at the next run';
        return next;
    end;
    lo := hi;
  end loop;

  if keep is null then return; end if;
  cutoff := as_of - keep;
  for part in
    select * from :schema.message_partition_bounds()
     where not is_default and upper_bound <= cutoff order by upper_bound
  loop
    begin
      lock table :schema.messages in access exclusive mode;
      execute format('select count(*) from (' || to_keep || ') k', part.partition_name) using cutoff into moved;
      if moved > 10000 then
        action := 'busy'; partition_name := part.partition_name;
        detail := format('holds %s rows not sent or sent within the retention period, more than one run moves: dropped when fewer', moved);
        return next;
        continue;
      end if;
      if moved > 0 then
        create temp table if not exists outbox_relay_moving (like :schema.messages) on commit drop;
        execute format('insert into pg_temp.outbox_relay_moving select * from :schema.%1$I where id in (' || to_keep || ')', part.partition_name)
          using cutoff;
      end if;
      execute format('drop table :schema.%I', part.partition_name);
      if moved > 0 then
        -- Its range is no longer covered: the rows go to the default partition.
        insert into :schema.messages select * from pg_temp.outbox_relay_moving;
        truncate pg_temp.outbox_relay_moving;
      end if;
      action := 'dropped'; partition_name := part.partition_name;
      detail := case when moved > 0 then format('%s not sent or sent within the retention period moved to messages_default', case when moved = 1 then '1 row' else moved || ' rows' end) end;
      return next;
    exception when lock_not_available then
      action := 'busy'; partition_name := part.partition_name; detail := 'the table was locked; dropped at the next run';
      return next;
    end;
  end loop;
end;
$$;

-- The table's owner owns what the layout adds, and the functions that make and drop
-- partitions run with its rights.
do $$
declare
  owner name := (select r.rolname from pg_class c join pg_roles r on r.oid = c.relowner where c.oid = ':schema.messages'::regclass);
begin
  if owner <> current_user then
    execute format('alter table :schema.messages_default owner to %I', owner);
    execute format('alter table :schema.message_partitioning owner to %I', owner);
    execute format('alter function :schema.maintain_message_partitions(interval, timestamptz) owner to %I', owner);
    execute format('alter function :schema.message_partition_bounds() owner to %I', owner);
    execute format('alter function :schema.message_partition_floor(text, timestamptz) owner to %I', owner);
    execute format('alter function :schema.message_partition_next(text, timestamptz) owner to %I', owner);
  end if;
end;
$$;

select count(*) from :schema.maintain_message_partitions();
insert into :schema.messages select * from pg_temp.outbox_relay_later;
