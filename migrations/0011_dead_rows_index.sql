-- Dead rows by id: with the indexes of publishable and of held rows, every unsent row is
-- reachable through a small partial index, so on-call reads (status, stuck, the unsent
-- gauges) cost what is unsent, never the sent rows kept for audit.
-- `:schema` is replaced by the (quoted) schema name when migrations run.
create index messages_dead_idx on :schema.messages (id) where state = 'dead';
