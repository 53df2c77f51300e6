import { readFileSync } from 'node:fs';
import path from 'node:path';
import type { EmbeddedCluster } from '../helpers/embedded-pg';
import type { JsonClient } from './soak-http';

/** When each step of a Postgres restart happened (performance.now() of the soak process). */
export interface RestartTimes {
  stopBegin: number;
  stopped: number;
  startBegin: number;
  /** Postgres accepts connections again. */
  started: number;
  /** The first /readyz answering 503 after the stop began, if any was seen. */
  readyzDown?: number;
  /** The first /readyz answering 200 after `started`, if any within the deadline. */
  readyzUp?: number;
}

/**
 * How Postgres goes down: `fast` (SIGINT, what the cluster's stop does: sessions are ended after
 * the statement in hand, a commit always reaches its client) or `immediate` (SIGQUIT right after
 * that, as a crash would: backends exit at once, so a commit may be durable while its answer is lost).
 */
export type StopMode = 'fast' | 'immediate';

/** The postmaster's pid and its status word ("ready", "stopping", ...) from postmaster.pid. */
function postmaster(pgDataDir: string): { pid: number; status: string } | undefined {
  try {
    const lines = readFileSync(path.join(pgDataDir, 'postmaster.pid'), 'utf8').split('\n');
    return { pid: Number(lines[0]), status: (lines[7] ?? '').trim() };
  } catch {
    return undefined;
  }
}

/**
 * Escalates the fast shutdown the cluster has begun to an immediate one. Waits until Postgres has
 * taken the fast request (postmaster.pid says "stopping"): the cluster's stop waits for the process
 * to exit, and must have sent its own signal before that happens.
 */
async function escalate(pgDataDir: string, stopping: Promise<void>): Promise<void> {
  let done = false;
  void stopping.then(() => (done = true), () => (done = true));
  while (!done) {
    const pm = postmaster(pgDataDir);
    if (pm?.status === 'stopping') {
      process.kill(pm.pid, 'SIGQUIT');
      return;
    }
    await new Promise((r) => setTimeout(r, 1));
  }
}

/**
 * Stops Postgres under the running keyplane, holds it down for `holdMs`, starts it again on the
 * same port, and watches /readyz (every 20 ms) from the stop until it answers 200 after the start.
 */
export async function restartPostgres(
  cluster: EmbeddedCluster,
  probe: JsonClient,
  opts: { holdMs: number; mode: StopMode; pgDataDir: string; readyDeadlineMs?: number },
): Promise<RestartTimes> {
  const readyDeadlineMs = opts.readyDeadlineMs ?? 60_000;
  const t: Partial<RestartTimes> = { stopBegin: performance.now() };
  let watching = true;
  const watcher = (async () => {
    while (watching) {
      const asked = performance.now();
      const status = await probe.request('GET', '/readyz').then((r) => r.status, () => 0);
      if (status !== 200 && t.readyzDown === undefined) t.readyzDown = asked;
      if (status === 200 && t.started !== undefined && asked >= t.started) {
        t.readyzUp = performance.now();
        return;
      }
      if (t.started !== undefined && performance.now() - t.started > readyDeadlineMs) return;
      await new Promise((r) => setTimeout(r, 20));
    }
  })();
  try {
    const stopping = cluster.stop();
    if (opts.mode === 'immediate') await escalate(opts.pgDataDir, stopping);
    await stopping;
    t.stopped = performance.now();
    await new Promise((r) => setTimeout(r, opts.holdMs));
    t.startBegin = performance.now();
    await cluster.start();
    t.started = performance.now();
    await watcher;
  } finally {
    watching = false;
  }
  return t as RestartTimes;
}
