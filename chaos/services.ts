// The services the fault-injection suite owns and breaks: a three-node Kafka cluster and a
// PostgreSQL cluster of its own, both on loopback, both started by the project's scripts.
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const run = promisify(execFile);
const script = (name: string) => fileURLToPath(new URL(`../scripts/${name}`, import.meta.url));

async function sh(name: string, args: readonly string[], timeoutMs = 180_000): Promise<string> {
  const { stdout } = await run('bash', [script(name), ...args], { timeout: timeoutMs, maxBuffer: 1 << 20 });
  return stdout.trim();
}

/**
 * Three KRaft nodes (scripts/kafka-cluster.sh): replication 3, min.insync.replicas 2.
 * Clients reach node {@link proxiedNode} through a proxy the suite runs on
 * {@link proxyPort}, forwarding to {@link proxyTarget}; the nodes replicate directly.
 */
export class KafkaCluster {
  constructor(
    readonly dir: string,
    readonly basePort: number,
    readonly proxiedNode = 3,
  ) {}

  readonly nodes = [1, 2, 3] as const;

  /** Where clients are told node {@link proxiedNode} is. */
  get proxyPort(): number {
    return this.basePort + 30;
  }

  /** The proxied node's own client listener. */
  get proxyTarget(): number {
    return this.basePort + 20 + this.proxiedNode - 1;
  }

  async start(): Promise<void> {
    await sh('kafka-cluster.sh', ['start', this.dir, String(this.basePort), String(this.proxiedNode)]);
  }

  /** The clients' bootstrap list. */
  get brokers(): string {
    return this.nodes.map((n) => `127.0.0.1:${n === this.proxiedNode ? this.proxyPort : this.basePort + 20 + n - 1}`).join(',');
  }

  /** Every partition of `topic` gets another in-sync replica as its leader; one line per partition. */
  async moveLeaders(topic: string): Promise<string> {
    return sh('kafka-cluster.sh', ['move-leaders', this.dir, topic], 90_000);
  }

  /** SIGKILL node `n` (no controlled shutdown). */
  async kill(n: number): Promise<void> {
    await sh('kafka-cluster.sh', ['kill', this.dir, String(n)]);
  }

  /**
   * Starts node `n` again and waits until it serves: on a busy machine a node may take
   * longer than one wait, so it is waited for again (up to three times) before giving up.
   */
  async restart(n: number): Promise<void> {
    try {
      await sh('kafka-cluster.sh', ['restart', this.dir, String(n)]);
    } catch (err) {
      for (let attempt = 1; ; attempt++) {
        try {
          await sh('kafka-cluster.sh', ['wait', this.dir, String(n)]);
          return;
        } catch (again) {
          if (attempt >= 3) throw new Error(`node ${n} did not come back: ${(again as Error).message}`, { cause: err });
        }
      }
    }
  }

  async stop(): Promise<void> {
    await sh('kafka-cluster.sh', ['stop', this.dir]).catch(() => undefined);
  }
}

/** A PostgreSQL cluster of the suite's own (scripts/pg-cluster.sh), restartable at will. */
export class OwnPostgres {
  url = '';

  constructor(
    readonly dir: string,
    readonly port: number,
  ) {}

  async start(): Promise<string> {
    this.url = (await sh('pg-cluster.sh', ['start', this.dir, String(this.port)])).split('\n').pop()!;
    return this.url;
  }

  /** Immediate stop (as a crash: no checkpoint, every connection cut) and start again. */
  async restart(): Promise<void> {
    await sh('pg-cluster.sh', ['restart', this.dir]);
  }

  async stop(): Promise<void> {
    await sh('pg-cluster.sh', ['stop', this.dir]).catch(() => undefined);
  }
}
