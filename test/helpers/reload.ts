import { createHash } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { AtomicWriter, CONFIG_FILE, ENV_FILE } from '../../src/sync/writer';
import type { ReloadRequest } from '../../src/reload/reloader';
import type { DesiredState } from '../../src/sync/desired-state';

const EMPTY_STATE: DesiredState = { keys: [], providers: [], models: [], routing: { aliases: {}, fallbacks: {} }, approvals: [], authRequired: false };
const sha = (s: string): string => createHash('sha256').update(s).digest('hex');

export function envFileText(env: Record<string, string>): string {
  return Object.keys(env).sort().map((k) => `${k}=${env[k]}\n`).join('');
}

/**
 * Writes revisions of config.yaml and litellm.env with the real atomic writer (the previous files
 * kept in memory, as the syncer keeps them) and hands out the ReloadRequest the syncer would.
 */
export class RevisionFiles {
  readonly writer: AtomicWriter;

  private constructor(readonly dir: string) {
    this.writer = new AtomicWriter(dir);
  }

  static async create(dir: string): Promise<RevisionFiles> {
    const f = new RevisionFiles(dir);
    await f.writer.prepare();
    return f;
  }

  async write(revision: number, env: Record<string, string>): Promise<ReloadRequest> {
    const config = `# revision ${revision}\nmodel_list: []\n`;
    const envText = envFileText(env);
    const previous = await this.writer.commit([await this.writer.stage(CONFIG_FILE, config, 0o644), await this.writer.stage(ENV_FILE, envText, 0o600)]);
    return {
      revision,
      outputDir: this.dir,
      configPath: this.writer.path(CONFIG_FILE),
      envPath: this.writer.path(ENV_FILE),
      env: { ...env },
      state: EMPTY_STATE,
      restorePrevious: async () => {
        const a = await this.writer.restore(CONFIG_FILE, previous.get(CONFIG_FILE), sha(config));
        const b = await this.writer.restore(ENV_FILE, previous.get(ENV_FILE), sha(envText));
        return a || b;
      },
    };
  }
}

/** A free TCP port on 127.0.0.1 (bound and released; good enough for tests on one machine). */
export async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

/**
 * LiteLLM's health endpoints on 127.0.0.1, switched off and on: `/health/liveliness` while `alive`,
 * `/health/readiness` while `alive` and `ready` (503 otherwise, as LiteLLM answers when not ready).
 */
export async function startLivelinessServer(): Promise<{ url: string; alive: boolean; ready: boolean; hits: number; readinessHits: number; close(): Promise<void> }> {
  const state = { alive: true, ready: true, hits: 0, readinessHits: 0 };
  const server: Server = createServer((req, res) => {
    state.hits++;
    if (req.url === '/health/readiness') state.readinessHits++;
    if (req.url === '/health/liveliness' && state.alive) {
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify("I'm alive!"));
    } else if (req.url === '/health/readiness' && state.alive && state.ready) {
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ status: 'healthy', db: 'Not connected' }));
    } else {
      res.writeHead(503).end();
    }
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return Object.assign(state, {
    url,
    close: () =>
      new Promise<void>((r) => {
        server.close(() => r());
        server.closeAllConnections();
      }),
  });
}

/** Polls `fn` until it returns a value other than undefined, or fails after `timeoutMs`. */
export async function eventually<T>(fn: () => Promise<T | undefined>, timeoutMs = 10_000, what = 'condition'): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}
