import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { createInterface } from 'node:readline';

const CHILD = path.join(__dirname, 'embedded-pg-child.ts');

/** A dedicated embedded Postgres cluster (src/db/embedded.ts) run by a child process the test controls. */
export interface EmbeddedCluster {
  proc: ChildProcess;
  url: string;
  port: number;
  /** The child's os.tmpdir() and umask (octal, from /proc) once Postgres had started. */
  after: { tmpdir: string; umask?: string };
  /** Stops Postgres (the data stays); resolves once it has stopped. */
  stop(): Promise<void>;
  /** Starts it again on the same port. */
  start(): Promise<void>;
  /** Stops Postgres and ends the child. */
  close(): Promise<void>;
  /** What the child wrote on stderr (for failure messages). */
  stderr(): string;
}

type Event = { event: 'started'; url: string; port: number; tmpdir: string; umask?: string } | { event: 'stopped' } | { event: 'error'; message: string };

export async function spawnEmbeddedPostgres(dataDir: string, opts: { database?: string; env?: NodeJS.ProcessEnv } = {}): Promise<EmbeddedCluster> {
  const proc = spawn(process.execPath, ['-r', 'tsx/cjs', CHILD, dataDir, opts.database ?? 'keyplane'], {
    env: opts.env ?? process.env,
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let err = '';
  proc.stderr!.on('data', (c: Buffer) => (err += c.toString('utf8')));
  const waiting: Array<(e: Event) => void> = [];
  createInterface({ input: proc.stdout! }).on('line', (line) => {
    let e: Event;
    try {
      e = JSON.parse(line) as Event;
    } catch {
      return;
    }
    waiting.shift()?.(e);
  });
  const exited = new Promise<never>((_, reject) => proc.once('exit', (code) => reject(new Error(`embedded Postgres child exited (${code}): ${err}`))));
  exited.catch(() => undefined);
  const next = async <K extends Event['event']>(want: K): Promise<Extract<Event, { event: K }>> => {
    const e = await Promise.race([new Promise<Event>((resolve) => waiting.push(resolve)), exited]);
    if (e.event !== want) throw new Error(`embedded Postgres child: expected ${want}, got ${JSON.stringify(e)}; stderr: ${err}`);
    return e as Extract<Event, { event: K }>;
  };
  const first = await next('started');
  return {
    proc,
    url: first.url,
    port: first.port,
    after: { tmpdir: first.tmpdir, umask: first.umask },
    async stop() {
      const done = next('stopped');
      proc.stdin!.write('stop\n');
      await done;
    },
    async start() {
      const done = next('started');
      proc.stdin!.write('start\n');
      await done;
    },
    async close() {
      if (proc.exitCode !== null) return;
      const gone = new Promise((resolve) => proc.once('exit', resolve));
      proc.stdin!.end();
      await gone;
    },
    stderr: () => err,
  };
}
