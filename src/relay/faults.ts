/**
 * Fault injection points for crash tests. The hook can only be installed by importing this
 * module directly, which the package's `exports` map does not allow: applications using
 * `outbox-relay` cannot reach it, and nothing in the relay reads environment variables
 * for it. In production the hook is always a no-op.
 */
export type FaultPoint =
  /** The Kafka transaction committed; the rows are not yet marked sent in PostgreSQL. */
  | 'after-kafka-commit'
  /** Records and checkpoint produced; the Kafka commit has not been requested. */
  | 'before-kafka-commit';

type Hook = (point: FaultPoint, context: { shard: number; rows: number }) => void | Promise<void>;

let hook: Hook | undefined;

export function installFaultHook(next: Hook | undefined): void {
  hook = next;
}

export async function faultPoint(point: FaultPoint, context: { shard: number; rows: number }): Promise<void> {
  if (hook) await hook(point, context);
}
