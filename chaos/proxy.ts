// A loopback TCP proxy that can turn every connection through it half-open: it stops
// forwarding in both directions without closing anything, as a peer that vanished behind a
// dead network path. New connections made afterwards are forwarded as before, so a client
// recovers once it notices its old connection is dead and opens another.
import net from 'node:net';

interface Pair {
  client: net.Socket;
  upstream: net.Socket;
  /** Forwarding stopped for good: bytes are read and dropped, nothing is closed. */
  dead: boolean;
}

export class HalfOpenProxy {
  private server: net.Server | undefined;
  private readonly pairs = new Set<Pair>();

  constructor(
    readonly port: number,
    private readonly target: { host: string; port: number },
  ) {}

  /** Listens on `port` (0: any free port, see {@link address}). */
  start(): Promise<void> {
    const server = net.createServer((client) => this.accept(client));
    this.server = server;
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.port, '127.0.0.1', () => resolve());
    });
  }

  /** The port it listens on. */
  get address(): number {
    return (this.server?.address() as net.AddressInfo).port;
  }

  private accept(client: net.Socket): void {
    const upstream = net.connect(this.target.port, this.target.host);
    const pair: Pair = { client, upstream, dead: false };
    this.pairs.add(pair);
    const forward = (from: net.Socket, to: net.Socket) =>
      from.on('data', (chunk) => {
        if (!pair.dead) to.write(chunk);
      });
    forward(client, upstream);
    forward(upstream, client);
    const close = () => {
      // A half-open pair stays silent: the client must find out by itself (kept until it does).
      if (pair.dead) {
        if (client.destroyed) this.pairs.delete(pair);
        return;
      }
      this.pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on('error', close).on('close', close);
    upstream.on('error', close).on('close', close);
  }

  /**
   * Every connection open now goes silent for good; later ones work. Returns how many. The
   * server's end of each is closed after `serverNoticesAfterMs`, as a server's TCP
   * keepalive finds a vanished peer (PostgreSQL would otherwise keep each session, and its
   * connection slot, for good); the client's end stays silent.
   */
  halfOpenAll(serverNoticesAfterMs = 20_000): number {
    let n = 0;
    for (const pair of this.pairs) {
      if (pair.dead) continue;
      pair.dead = true;
      n++;
      setTimeout(() => pair.upstream.destroy(), serverNoticesAfterMs).unref();
    }
    return n;
  }

  /** Silent pairs still held (their clients have not given up on them). */
  get silent(): number {
    return [...this.pairs].filter((p) => p.dead).length;
  }

  async stop(): Promise<void> {
    for (const pair of this.pairs) {
      pair.client.destroy();
      pair.upstream.destroy();
    }
    this.pairs.clear();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
  }
}
