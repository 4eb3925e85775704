/**
 * The exactly-once check of every test: given how many times each id (an outbox id in
 * Kafka, a record's key in a consumer's effects) was seen, which were seen more than once,
 * which never, and which were not expected at all. All three empty: exactly once.
 */
export function exactlyOnceReport(counts: Map<string, number>, expected: Iterable<string>): { duplicates: string[]; missing: string[]; unexpected: string[] } {
  const wanted = new Set(expected);
  return {
    duplicates: [...counts].filter(([, n]) => n > 1).map(([k]) => k),
    missing: [...wanted].filter((k) => !counts.has(k)),
    unexpected: [...counts.keys()].filter((k) => !wanted.has(k)),
  };
}
