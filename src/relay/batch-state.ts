/**
 * The life of one batch, as an explicit state machine: a batch is claimed, its records
 * produced inside a Kafka transaction, committed, then marked sent in PostgreSQL. Any
 * state before `marking` may end in `aborted`; illegal moves throw, so a bug that would
 * mark rows before their transaction committed fails loudly instead.
 */
export type BatchState = 'claimed' | 'producing' | 'committing' | 'marking' | 'done' | 'aborted';

const NEXT: Record<BatchState, readonly BatchState[]> = {
  claimed: ['producing', 'aborted'],
  producing: ['committing', 'aborted'],
  committing: ['marking', 'aborted'],
  marking: ['done'],
  done: [],
  aborted: [],
};

export class BatchLifecycle {
  private current: BatchState = 'claimed';

  get state(): BatchState {
    return this.current;
  }

  to(next: BatchState): void {
    if (!NEXT[this.current].includes(next)) throw new Error(`illegal batch transition ${this.current} -> ${next}`);
    this.current = next;
  }
}
