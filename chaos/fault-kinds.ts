// The fault kinds of the soak (see README "How we test the guarantees"), shared by the
// runner and the test that checks a short run met each of them.

export const ALL_FAULT_KINDS = [
  'relayKill',
  'relayKillBetweenCommitAndMark',
  'relayPause',
  'consumerKill',
  'consumerPause',
  'brokerBounce',
  'brokersBelowMinIsr',
  'brokerHalfOpen',
  'leaderMove',
  'postgresRestart',
  'postgresHalfOpen',
] as const;

export type FaultKind = (typeof ALL_FAULT_KINDS)[number];

/** Run unless `--faults` names others: every kind. */
export const DEFAULT_FAULT_KINDS: readonly FaultKind[] = ALL_FAULT_KINDS;
