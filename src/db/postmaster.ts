import { readFileSync, readlinkSync, realpathSync } from 'node:fs';
import path from 'node:path';

/**
 * The `-c` option keyplane starts its Postgres with: the pid of the keyplane process that owns it.
 * It shows in the postmaster's command line, so whether that owner still runs needs no file that
 * could go stale: a postmaster whose parent is no longer its owner was left behind by a keyplane
 * that died (SIGKILL, OOM) and is an orphan.
 */
export const OWNER_OPTION = 'keyplane.owner';

/** A live postmaster of one cluster, as its `postmaster.pid` and /proc describe it. */
export interface Postmaster {
  pid: number;
  port: number;
  /** `starting`, `ready`, `stopping` or `standby` (line 8 of postmaster.pid). */
  status: string;
  /** The keyplane process that started it, when it still is its parent; undefined for an orphan. */
  owner?: number;
}

function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

function parentOf(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
  } catch {
    return undefined;
  }
}

function ownerOf(pid: number): number | undefined {
  let argv: string[];
  try {
    argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
  } catch {
    return undefined;
  }
  const opt = argv.find((a) => a.startsWith(`${OWNER_OPTION}=`));
  const owner = opt ? Number(opt.slice(OWNER_OPTION.length + 1)) : NaN;
  return Number.isInteger(owner) && owner > 0 && parentOf(pid) === owner ? owner : undefined;
}

export type Found = { state: 'none' } | { state: 'running'; postmaster: Postmaster } | { state: 'stale-pid-file'; pid: number };

/**
 * The postmaster running on `pgDir`, if any. A pid file whose pid now belongs to another process
 * (pid reuse after a crash or a container restart) is `stale-pid-file`: Postgres itself would
 * refuse to start on it. A pid file whose process is gone is `none` (Postgres cleans it up).
 */
export function findPostmaster(pgDir: string): Found {
  let lines: string[];
  try {
    lines = readFileSync(path.join(pgDir, 'postmaster.pid'), 'utf8').split('\n');
  } catch {
    return { state: 'none' };
  }
  const pid = Number(lines[0]);
  if (!Number.isInteger(pid) || pid <= 0 || !alive(pid)) return { state: 'none' };
  // Postgres works in its data directory: the one way to tell it from a process that took its pid.
  let cwd: string;
  try {
    cwd = readlinkSync(`/proc/${pid}/cwd`);
  } catch {
    // Not ours to look at (another user's process): assume it is the postmaster, as Postgres would.
    return { state: 'running', postmaster: { pid, port: Number(lines[3]), status: (lines[7] ?? '').trim() } };
  }
  if (cwd !== realpathSync(pgDir)) return { state: 'stale-pid-file', pid };
  return { state: 'running', postmaster: { pid, port: Number(lines[3]), status: (lines[7] ?? '').trim(), owner: ownerOf(pid) } };
}

/** Whether the keyplane process `pid` is a server (`keyplane serve`), rather than a command that finishes on its own. */
export function ownerServes(pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').includes('serve');
  } catch {
    return false;
  }
}

/** Resolves true once `pid` has exited (or is a zombie), false at the deadline. */
export async function waitGone(pid: number, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (alive(pid)) {
    if (Date.now() >= deadline) return false;
    await new Promise((r) => setTimeout(r, 50));
  }
  return true;
}

export function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // Already gone.
  }
}
