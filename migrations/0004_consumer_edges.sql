-- Consumer at the edges: the incarnation of the partition an offset belongs to, inbox
-- de-duplication per source, and what inbox retention needs. `:schema` is replaced by the
-- (quoted) schema name when migrations run.

-- Kafka topic id (base64, as Kafka's tools print it) of the topic incarnation whose log the
-- stored offset points into. A topic deleted and recreated under the same name gets a new id:
-- the stored offset then belongs to a log that no longer exists and must not be used to skip
-- records of the new one. NULL: not known (rows from before this migration, or written by
-- hand): the consumer judges such an offset by the log it reads and records that log's id.
alter table :schema.consumer_offsets add column topic_id text;

-- Outbox ids are unique per outbox database only: two services publishing to one topic reuse
-- them. The inbox key therefore includes the publishing outbox's source id (header
-- `outbox-source`). Rows from before this migration carry source '' (records of relays that
-- did not stamp a source); they are kept and age out through inbox retention.
alter table :schema.consumer_inbox add column source text not null default '';
alter table :schema.consumer_inbox alter column source drop default;
alter table :schema.consumer_inbox drop constraint consumer_inbox_pkey;
alter table :schema.consumer_inbox add constraint consumer_inbox_pkey primary key (group_id, source, outbox_id);

-- The topic incarnation a record was applied from. An operator's rewind forgets the inbox
-- rows at or after the new offset so those records are applied again; rows of an older
-- incarnation of the topic (same offsets, other records) must survive it, so that events
-- published again into the new topic are still recognised. NULL: from before this column.
alter table :schema.consumer_inbox add column topic_id text;

-- Dead letters, too, remember the incarnation of the log their record came from: after a
-- topic is recreated, a record of the new log at the same offset is another record, and
-- must neither overwrite nor settle the old one's dead letter.
alter table :schema.dead_letters add column topic_id text;
alter table :schema.dead_letters drop constraint dead_letters_record_unique;
create unique index dead_letters_record_unique on :schema.dead_letters (group_id, topic, partition, "offset", coalesce(topic_id, ''));

-- Inbox retention deletes a group's oldest rows first, in small batches.
create index consumer_inbox_applied_at_idx on :schema.consumer_inbox (group_id, applied_at);
