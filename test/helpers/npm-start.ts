import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { freePort } from './reload';

export const ROOT = path.resolve(__dirname, '..', '..');

/** pid, parent and process group of every live (not zombie) process, from /proc. */
export function processes(): Array<{ pid: number; ppid: number; pgrp: number }> {
  const out: Array<{ pid: number; ppid: number; pgrp: number }> = [];
  for (const name of readdirSync('/proc')) {
    const pid = Number(name);
    if (!Number.isInteger(pid) || pid <= 0) continue;
    let stat: string;
    try {
      stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    } catch {
      continue;
    }
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (f[0] === 'Z') continue;
    out.push({ pid, ppid: Number(f[1]), pgrp: Number(f[2]) });
  }
  return out;
}

/** `pid` and every process below it (Postgres too, though it runs in a session of its own). */
export function tree(pid: number): number[] {
  const all = processes();
  const found = [pid];
  for (let i = 0; i < found.length; i++) for (const p of all) if (p.ppid === found[i]) found.push(p.pid);
  return found.filter((p) => all.some((x) => x.pid === p));
}

export function alive(pid: number): boolean {
  return processes().some((p) => p.pid === pid);
}

export function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // already gone
  }
}

/** Polls until none of `pids` runs; rejects naming the survivors after `timeoutMs`. */
export async function allGone(pids: number[], timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const left = pids.filter(alive);
    if (!left.length) return;
    if (Date.now() > deadline) throw new Error(`still running after ${timeoutMs} ms: ${left.map((p) => `${p} (${cmdline(p)})`).join(', ')}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export function cmdline(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ').trim();
  } catch {
    return '?';
  }
}

export interface Started {
  /** The process the test started (npm, or node for `bin/keyplane.js`); it leads its own process group. */
  proc: ChildProcess;
  pid: number;
  url: string;
  output(): string;
  /** Resolves with how it ended. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** The node process running keyplane (npm's child, or the process itself). */
  keyplanePid(): number;
  /** Kills what is left of its tree (after a test failed). */
  kill(): void;
}

/**
 * Starts `npm start` (or `cmd`) in `cwd` as a terminal job would be: its own process group, env on
 * top of PATH and HOME. Resolves once it is running (its log says so) and /readyz answers 200.
 */
export async function startKeyplane(cwd: string, env: Record<string, string>, cmd: string[] = ['npm', 'start']): Promise<Started> {
  const port = await freePort();
  const proc = spawn(cmd[0]!, cmd.slice(1), {
    cwd,
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: {
      PATH: process.env.PATH!,
      HOME: process.env.HOME ?? '/root',
      npm_config_update_notifier: 'false',
      KEYPLANE_LISTEN: `127.0.0.1:${port}`,
      KEYPLANE_HEALTH_SCHEDULE: 'off',
      ...env,
    },
  });
  let out = '';
  proc.stdout!.on('data', (c) => (out += c));
  proc.stderr!.on('data', (c) => (out += c));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => proc.once('exit', (code, sig) => resolve({ code, signal: sig })));
  const pid = proc.pid!;
  let seen: number[] = [pid];
  const started: Started = {
    proc,
    pid,
    url: `http://127.0.0.1:${port}`,
    output: () => out,
    exited,
    keyplanePid() {
      const all = processes();
      const child = all.find((p) => p.ppid === pid && /bin\/keyplane\.js serve/.test(cmdline(p.pid)));
      if (cmdline(pid).includes('bin/keyplane.js')) return pid;
      if (!child) throw new Error(`no keyplane process under ${pid}`);
      return child.pid;
    },
    kill() {
      for (const p of [...new Set([...seen, ...tree(pid)])]) signal(p, 'SIGKILL');
    },
  };
  const deadline = Date.now() + 90_000;
  for (;;) {
    if (proc.exitCode !== null || proc.signalCode !== null) throw new Error(`keyplane exited (${proc.exitCode ?? proc.signalCode}) before it was ready:\n${out}`);
    // Ready, and done starting (the sync loop too): a stop then is a stop of a running server.
    try {
      if (out.includes('"message":"keyplane is running"') && (await fetch(`${started.url}/readyz`)).ok) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      started.kill();
      throw new Error(`keyplane did not become ready:\n${out}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  seen = tree(pid);
  return started;
}
