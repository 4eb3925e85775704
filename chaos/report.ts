// What a chaos run found, as the runner prints it (--report FILE) and the soak test reads it.

/** The verdict's counts: every one of them is 0 in a run that passed. */
export interface VerdictCounts {
  /** Committed rows whose record never reached Kafka. */
  lost: number;
  duplicated: number;
  /** Records of one key out of their rows' commit order. */
  reordered: number;
  /** Records of rows that never committed (a rolled-back writer's). */
  phantom: number;
  duplicateEffects: number;
  missingEffects: number;
  balanceMismatches: number;
  unsentRows: number;
}

export interface ChaosReport extends VerdictCounts {
  ok: boolean;
  seed: number;
  /** Rows committed by the writers. */
  events: number;
  published: number;
  /** Faults injected, by kind. */
  faults: Record<string, number>;
  /** Per mismatching account: the committed rows' sum, the ledger's sum, the balance (only when some mismatch). */
  balanceMismatchDetails?: { account: string; expected: string | null; ledger: string | null; balance: string | null }[];
  deadLetters: number;
  /** From the end of each fault until a row committed after it is applied by a consumer, by kind. */
  recoveryMs: Record<string, { p50: number | null; max: number | null }>;
  writers: { committedTx: number; rolledBackTx: number; failedTx: number; rows: number };
  unexpectedExits: { startFailed: Record<string, number>; crashed: Record<string, number> };
  crashes: number;
  consumerRebuilds: number;
  durationMs: number;
}
