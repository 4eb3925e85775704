/**
 * One INSERT for any number of events: parallel arrays unnested in order, so a bulk enqueue
 * is a single round trip and a single trigger firing. `unnest` of several arrays yields
 * rows in array order, and identity values are drawn in that order, so the returned ids
 * line up with the input.
 */
export function insertMessagesSql(q: string): string {
  return `
insert into ${q}.messages
  (topic, key, payload, headers, event_type, aggregate_type, aggregate_id, schema_version, traceparent)
select * from unnest(
  $1::text[], $2::text[], $3::bytea[], $4::jsonb[], $5::text[], $6::text[], $7::text[], $8::int[], $9::text[]
)
returning id`;
}
