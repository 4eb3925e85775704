/**
 * Topics of the rows the relay is going to publish, for the start-up check of target
 * topics. Only pending and failed rows, through the partial indexes of publishable and of
 * held rows, so the work is proportional to the unsent rows, however many sent rows are
 * retained (a `state <> 'sent'` filter could use no index and would scan the table).
 */
export function unsentTopicsSql(q: string): string {
  return `
select distinct t.topic from (
  select m.topic from ${q}.messages m where m.state in ('pending', 'failed') and not m.held
  union all
  select m.topic from ${q}.messages m where m.held
) t
 limit 1000`;
}
