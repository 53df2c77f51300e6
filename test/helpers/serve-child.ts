import { spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { eventually } from './reload';

const BIN = path.resolve(__dirname, '..', '..', 'bin', 'keyplane.js');

/** One process as /proc/<pid>/stat shows it. */
interface ProcStat {
  pid: number;
  state: string;
  ppid: number;
  pgrp: number;
}

function procStat(pid: number): ProcStat | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // The command name sits in parentheses and may hold spaces or parentheses itself: the fields start after the last ')'.
  const f = text.slice(text.lastIndexOf(')') + 2).split(' ');
  return { pid, state: f[0]!, ppid: Number(f[1]), pgrp: Number(f[2]) };
}

function allProcesses(): ProcStat[] {
  const out: ProcStat[] = [];
  for (const name of readdirSync('/proc')) {
    const pid = Number(name);
    if (!Number.isInteger(pid) || pid <= 0) continue;
    const s = procStat(pid);
    if (s) out.push(s);
  }
  return out;
}

/** Live (not zombie) processes in any of `groups`. */
export function liveInGroups(groups: Set<number>): ProcStat[] {
  return allProcesses().filter((p) => groups.has(p.pgrp) && p.state !== 'Z');
}

function signalQuietly(target: number, signal: NodeJS.Signals): void {
  try {
    process.kill(target, signal);
  } catch {
    // Already gone.
  }
}

export interface ServeChild {
  readonly pid: number;
  readonly instanceId: string;
  /** Everything it wrote to stdout and stderr so far (JSON log lines). */
  output(): string;
  /** Milliseconds from spawn to the first log line containing `text`; rejects when it exits first or after `timeoutMs`. */
  waitForLog(text: string, timeoutMs: number): Promise<number>;
  readonly exited: boolean;
  /**
   * SIGKILL, as the death of a container or of a systemd unit's cgroup: keyplane's process group is
   * stopped (SIGSTOP: it starts nothing more and writes nothing more), the reload commands it
   * started (each in its own process group) are noted, then all of it is killed. Resolves once
   * keyplane has exited and none of those processes runs. Returns how many reload commands ran.
   */
  crash(): Promise<{ commandsKilled: number }>;
  /** SIGTERM (a clean stop); SIGKILL after `graceMs`. Resolves once it has exited. */
  stop(graceMs?: number): Promise<void>;
}

/**
 * `keyplane serve` in its own process and process group, as deployed (bin/keyplane.js), with
 * `env` on top of PATH. Log lines are kept in memory.
 */
export function startServeChild(instanceId: string, env: Record<string, string>): ServeChild {
  const started = Date.now();
  const proc = spawn(process.execPath, [BIN, 'serve'], {
    env: { PATH: process.env.PATH!, KEYPLANE_INSTANCE_ID: instanceId, ...env },
    // Its own process group: a crash takes keyplane and whatever it runs in that group, never the test.
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  const waiters: Array<{ text: string; resolve: (ms: number) => void }> = [];
  const onData = (c: Buffer): void => {
    out += c.toString('utf8');
    for (const w of [...waiters]) {
      if (out.includes(w.text)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(Date.now() - started);
      }
    }
  };
  proc.stdout!.on('data', onData);
  proc.stderr!.on('data', onData);
  let exited = false;
  const exit = new Promise<void>((resolve) => proc.once('close', () => resolve()));
  proc.once('exit', () => (exited = true));
  const pid = proc.pid!;
  const tail = (): string => out.split('\n').slice(-25).join('\n');

  return {
    pid,
    instanceId,
    output: () => out,
    get exited() {
      return exited;
    },
    waitForLog(text, timeoutMs) {
      if (out.includes(text)) return Promise.resolve(Date.now() - started);
      return new Promise<number>((resolve, reject) => {
        const w = { text, resolve: (ms: number) => (clearTimeout(timer), resolve(ms)) };
        const timer = setTimeout(() => {
          waiters.splice(waiters.indexOf(w), 1);
          reject(new Error(`keyplane ${instanceId} logged no "${text}" within ${timeoutMs} ms; its last lines:\n${tail()}`));
        }, timeoutMs);
        waiters.push(w);
        void exit.then(() => {
          if (!waiters.includes(w)) return;
          waiters.splice(waiters.indexOf(w), 1);
          clearTimeout(timer);
          reject(new Error(`keyplane ${instanceId} exited before it logged "${text}"; its last lines:\n${tail()}`));
        });
      });
    },
    async crash() {
      if (exited) return { commandsKilled: 0 };
      signalQuietly(-pid, 'SIGSTOP');
      // Direct children in a group of their own are the reload commands (spawned detached). One
      // forked but not yet in its own group is still in keyplane's and dies with it.
      const commands = allProcesses().filter((p) => p.ppid === pid && p.pgrp === p.pid && p.pgrp !== pid);
      signalQuietly(-pid, 'SIGKILL');
      for (const c of commands) signalQuietly(-c.pgrp, 'SIGKILL');
      await exit;
      const groups = new Set([pid, ...commands.map((c) => c.pgrp)]);
      await eventually(async () => (liveInGroups(groups).length === 0 ? true : undefined), 10_000, `the processes of keyplane ${instanceId} to be gone`);
      return { commandsKilled: commands.length };
    },
    async stop(graceMs = 20_000) {
      if (exited) return;
      signalQuietly(pid, 'SIGTERM');
      const timer = setTimeout(() => signalQuietly(-pid, 'SIGKILL'), graceMs);
      await exit;
      clearTimeout(timer);
    },
  };
}
