import { mkdtempSync, rmSync } from 'node:fs';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import os from 'node:os';
import path from 'node:path';

/**
 * The real Docker engine behind a unix socket that a test can cut: `stopWhen` makes the engine
 * "stop" as the first request matching it arrives (that request is never forwarded; every open
 * connection drops; the socket goes away), and `restart` brings it back. The engine on these
 * machines is shared, so stopping the real one is not an option.
 */
export class DockerProxy {
  readonly socketPath: string;
  private readonly dir: string;
  private server?: Server;
  private readonly sockets = new Set<Socket>();
  private trigger?: { match: (requestLine: string) => boolean; fired: () => void };
  /** Request lines (`POST /v1.41/containers/x/stop?t=5`) seen so far. */
  readonly seen: string[] = [];

  private constructor(private readonly upstream: string) {
    this.dir = mkdtempSync(path.join(os.tmpdir(), 'kp-docker-proxy-'));
    this.socketPath = path.join(this.dir, 'docker.sock');
  }

  static async start(upstreamSocket: string): Promise<DockerProxy> {
    const p = new DockerProxy(upstreamSocket);
    await p.restart();
    return p;
  }

  get url(): string {
    return `unix://${this.socketPath}`;
  }

  /** The engine stops when a request whose line matches arrives; resolves then. */
  stopWhen(match: (requestLine: string) => boolean): Promise<void> {
    return new Promise((resolve) => {
      this.trigger = { match, fired: resolve };
    });
  }

  async restart(): Promise<void> {
    if (this.server) return;
    const server = createServer((client) => this.accept(client));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.socketPath, () => resolve());
    });
    this.server = server;
  }

  async stop(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    for (const s of this.sockets) s.destroy();
    this.sockets.clear();
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  async close(): Promise<void> {
    await this.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }

  private accept(client: Socket): void {
    const upstream = createConnection(this.upstream);
    this.sockets.add(client);
    this.sockets.add(upstream);
    const drop = (): void => {
      client.destroy();
      upstream.destroy();
      this.sockets.delete(client);
      this.sockets.delete(upstream);
    };
    client.on('error', drop).on('close', drop);
    upstream.on('error', drop).on('close', drop);
    upstream.pipe(client);
    client.on('data', (chunk: Buffer) => {
      const line = /^(GET|POST|PUT|DELETE|HEAD) (\S+) HTTP\/1\.[01]\r\n/.exec(chunk.toString('latin1', 0, Math.min(chunk.length, 2048)));
      if (line) this.seen.push(`${line[1]} ${line[2]}`);
      const trigger = this.trigger;
      if (line && trigger?.match(`${line[1]} ${line[2]}`)) {
        this.trigger = undefined;
        void this.stop().then(trigger.fired);
        return;
      }
      upstream.write(chunk);
    });
  }
}
