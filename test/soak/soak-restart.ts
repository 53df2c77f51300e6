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
 * Stops Postgres under the running keyplane, holds it down for `holdMs`, starts it again on the
 * same port, and watches /readyz (every 20 ms) from the stop until it answers 200 after the start.
 */
export async function restartPostgres(cluster: EmbeddedCluster, probe: JsonClient, holdMs: number, readyDeadlineMs = 60_000): Promise<RestartTimes> {
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
    await cluster.stop();
    t.stopped = performance.now();
    await new Promise((r) => setTimeout(r, holdMs));
    t.startBegin = performance.now();
    await cluster.start();
    t.started = performance.now();
    await watcher;
  } finally {
    watching = false;
  }
  return t as RestartTimes;
}
