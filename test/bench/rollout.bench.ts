import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import type Docker from 'dockerode';
import type { DockerMode } from '../../src/config';
import { waitForReadiness } from '../../src/reload/liveliness';
import { connectDocker, ensureStandInImage, StandIns, STANDIN_IMAGE } from '../helpers/docker';
import { DRAINING_STANDIN_CMD } from '../helpers/draining-standin';
import { startHaproxy } from '../helpers/haproxy';
import { LoadClient } from '../helpers/load-client';
import { freePort } from '../helpers/reload';
import { reloadWiring } from '../helpers/reload-app';
import { startBenchKeyplane, type BenchEnv } from './bench-env';

/**
 * `npm run bench:rollout`: what a key rotation costs the clients of LiteLLM, with one LiteLLM
 * stand-in (the client talks to it directly) and with two behind haproxy (compose/haproxy.cfg, the
 * HA profile), in each Docker mode, over ROTATIONS rotations through the admin API, under a client
 * that sends requests without pause. Per rotation: failed requests, the outage (as keyplane's sync
 * status reports it, stop -> ready, and as the client saw it, first failure -> next success), the
 * time from the PUT until every replica serves the new key, and until the reload (settle included)
 * is over. Next to them, the stand-in's own start -> ready, `docker restart` -> ready, and stop +
 * start of a replacement -> ready, measured on the same stand-in by hand.
 * Goals (issue 10): no failed request with two replicas; with one, an outage no longer than 1.05
 * times the container's own restart.
 *
 * BENCH_ROTATIONS (5), BENCH_STANDIN_DELAY (seconds before the stand-in answers, as LiteLLM's cold
 * start: 7), BENCH_STANDIN_READY_DELAY (seconds from live to ready: 0), BENCH_MODES (restart,recreate).
 */
const ROTATIONS = Number(process.env.BENCH_ROTATIONS ?? 5);
const STANDIN_ENV = { STANDIN_DELAY: process.env.BENCH_STANDIN_DELAY ?? '7', STANDIN_READY_DELAY: process.env.BENCH_STANDIN_READY_DELAY ?? '0' };
const MODES = (process.env.BENCH_MODES ?? 'restart,recreate').split(',').map((m) => m.trim()) as DockerMode[];
// As StandIns gives its containers; keyplane uses the container's own stop timeout, and so does the baseline.
const STOP_TIMEOUT_S = 5;
const POLL_MS = 5;
const GOAL_RATIO = 1.05;

interface Rotation {
  setup: string;
  rotation: number;
  failed: number;
  sent: number;
  /** Per target, from keyplane's sync status. */
  outageMs: Array<number | null>;
  clientOutageMs: number | null;
  putToServingMs: number;
  putToDoneMs: number;
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};
const round = (x: number | null | undefined): number | string => (x === null || x === undefined ? '-' : Math.round(x));

async function ready(port: number): Promise<void> {
  await waitForReadiness(`http://127.0.0.1:${port}`, { timeoutMs: 120_000, intervalMs: POLL_MS });
}

async function servedKey(port: number): Promise<string | undefined> {
  try {
    const res = await fetch(`http://127.0.0.1:${port}/env`, { signal: AbortSignal.timeout(1_000) });
    return res.ok ? /^OPENROUTER_API_KEY=(.*)$/m.exec(await res.text())?.[1] : undefined;
  } catch {
    return undefined;
  }
}

async function untilServed(ports: number[], key: string, timeoutMs = 120_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (const port of ports) {
    while ((await servedKey(port)) !== key) {
      if (Date.now() > deadline) throw new Error(`the stand-in on ${port} did not serve the new key within ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, POLL_MS));
    }
  }
}

/** A stand-in as the rollout test runs it, started and ready (no time limit of its own: the start delay is the user's). */
async function startStandIn(si: StandIns, name: string, port: number, dir: string, labels: Record<string, string> = {}): Promise<Docker.Container> {
  const c = await si.create({ name, port, outDir: dir, cmd: DRAINING_STANDIN_CMD, env: STANDIN_ENV, labels });
  await c.start();
  await ready(port);
  return c;
}

/** The container's own times, by hand, on one stand-in: start -> ready, restart -> ready, stop + start of a replacement -> ready. */
async function baselines(si: StandIns, dir: string): Promise<Record<string, number[]>> {
  const port = await freePort();
  const name = `kp-bench-${si.runId}-base`;
  let c = await startStandIn(si, `${name}-0`, port, dir);
  const out: Record<string, number[]> = { 'start -> ready': [], 'docker restart -> ready': [], 'stop + start replacement -> ready': [] };
  for (let i = 0; i < ROTATIONS; i++) {
    await c.stop({ t: STOP_TIMEOUT_S });
    const t0 = performance.now();
    await c.start();
    await ready(port);
    out['start -> ready']!.push(performance.now() - t0);
  }
  for (let i = 0; i < ROTATIONS; i++) {
    const t0 = performance.now();
    await c.restart({ t: STOP_TIMEOUT_S });
    await ready(port);
    out['docker restart -> ready']!.push(performance.now() - t0);
  }
  for (let i = 1; i <= ROTATIONS; i++) {
    const next = await si.create({ name: `${name}-${i}`, port, outDir: dir, cmd: DRAINING_STANDIN_CMD, env: STANDIN_ENV });
    const t0 = performance.now();
    await c.stop({ t: STOP_TIMEOUT_S });
    await next.start();
    await ready(port);
    out['stop + start replacement -> ready']!.push(performance.now() - t0);
    await c.remove({ force: true });
    c = next;
  }
  return out;
}

/** ROTATIONS PUTs through the admin API under `client`, each waited for to the end of its reload. */
async function rotate(setup: string, bench: BenchEnv, client: LoadClient, ports: number[]): Promise<Rotation[]> {
  const { kp, token } = bench;
  const { queue } = reloadWiring(kp);
  const headers = { authorization: `Bearer ${token}`, 'content-type': 'application/json' };
  const rows: Rotation[] = [];
  for (let i = 1; i <= ROTATIONS; i++) {
    const key = `sk-or-bench-rollout-${i}-${randomBytes(6).toString('hex')}`;
    const tPut = client.now();
    const res = await fetch(`${kp.url!}/api/v1/admin/platform-keys/openrouter`, { method: 'PUT', headers, body: JSON.stringify({ api_key: key }) });
    if (res.status !== 200) throw new Error(`PUT answered ${res.status}: ${await res.text()}`);
    await untilServed(ports, key);
    const tServing = client.now();
    await queue.whenIdle();
    const tDone = client.now();
    const sync = (await (await fetch(`${kp.url!}/api/v1/admin/sync`, { headers })).json()) as {
      last_reload?: { last?: { status: string; error: string | null; targets: Array<{ outage_ms: number | null }> } };
    };
    const last = sync.last_reload?.last;
    if (last?.status !== 'ok') throw new Error(`${setup}: reload after PUT ${i} ended ${last?.status}: ${last?.error ?? ''}`);
    const outages = client.outages(tPut, tDone);
    rows.push({
      setup,
      rotation: i,
      failed: client.failures(tPut, tDone).length,
      sent: client.between(tPut, tDone).length,
      outageMs: last.targets.map((t) => t.outage_ms),
      clientOutageMs: outages.length ? outages.reduce((a, o) => a + (o.toMs - o.fromMs), 0) : null,
      putToServingMs: tServing - tPut,
      putToDoneMs: tDone - tPut,
    });
  }
  return rows;
}

const keyplaneEnv = (dir: string, mode: DockerMode, host: string, select: Record<string, string>): Record<string, string> => ({
  KEYPLANE_OUTPUT_DIR: dir,
  KEYPLANE_RELOAD: 'docker',
  KEYPLANE_DOCKER_MODE: mode,
  KEYPLANE_READY_TIMEOUT: '120s',
  DOCKER_HOST: host,
  ...select,
});

/** One stand-in; the client talks to it directly (a load balancer would only add its check interval). */
async function oneReplica(si: StandIns, mode: DockerMode, dir: string, host: string): Promise<Rotation[]> {
  const port = await freePort();
  const name = `kp-bench-${si.runId}-one-${mode}`;
  await startStandIn(si, name, port, dir);
  const bench = await startBenchKeyplane(keyplaneEnv(dir, mode, host, { KEYPLANE_DOCKER_CONTAINERS: name }));
  const client = new LoadClient(si.url(port), { workers: 2, pauseAfterFailureMs: 10 });
  try {
    // keyplane's first render restarts the stand-in: over before the measured rotations.
    await reloadWiring(bench.kp).queue.whenIdle();
    client.start();
    return await rotate(`1 replica, ${mode}`, bench, client, [port]);
  } finally {
    await client.stop();
    await bench.close();
  }
}

/** Two stand-ins behind haproxy with compose/haproxy.cfg; the client talks to haproxy. */
async function twoReplicas(si: StandIns, mode: DockerMode, dir: string, host: string): Promise<Rotation[]> {
  const ports = [await freePort(), await freePort()];
  const group = `${si.runId}-${mode}`;
  await Promise.all(ports.map((p, i) => startStandIn(si, `kp-bench-${si.runId}-two-${mode}-${i + 1}`, p, dir, { 'keyplane.bench.rollout': group })));
  const hp = await startHaproxy({ replicas: [`127.0.0.1:${ports[0]}`, `127.0.0.1:${ports[1]}`] });
  let bench: BenchEnv | undefined;
  const client = new LoadClient(hp.url, { workers: 2, pauseAfterFailureMs: 10 });
  try {
    bench = await startBenchKeyplane(keyplaneEnv(dir, mode, host, { KEYPLANE_DOCKER_LABEL: `keyplane.bench.rollout=${group}` }));
    await reloadWiring(bench.kp).queue.whenIdle();
    await hp.waitAllUp(60_000);
    client.start();
    return await rotate(`2 replicas + haproxy, ${mode}`, bench, client, ports);
  } finally {
    await client.stop();
    await bench?.close();
    await hp.stop();
  }
}

async function main(): Promise<void> {
  const { docker, where } = await connectDocker();
  await ensureStandInImage(docker);
  const si = new StandIns(docker);
  const root = mkdtempSync(path.join(os.tmpdir(), 'kp-bench-rollout-'));
  const sub = (n: string): string => {
    const d = path.join(root, n);
    mkdirSync(d);
    return d;
  };
  try {
    const base = await baselines(si, sub('base'));
    await si.removeAll();
    const rows: Rotation[] = [];
    for (const mode of MODES) {
      rows.push(...(await oneReplica(si, mode, sub(`one-${mode}`), where)));
      await si.removeAll();
      rows.push(...(await twoReplicas(si, mode, sub(`two-${mode}`), where)));
      await si.removeAll();
    }

    console.log(
      `bench:rollout: ${ROTATIONS} rotations per setup; stand-in ${STANDIN_IMAGE} with STANDIN_DELAY=${STANDIN_ENV.STANDIN_DELAY}s, ` +
        `STANDIN_READY_DELAY=${STANDIN_ENV.STANDIN_READY_DELAY}s, drains on SIGTERM, stop timeout ${STOP_TIMEOUT_S} s; keyplane's default settle; Docker at ${where}`,
    );
    console.table(
      rows.map((r) => ({
        setup: r.setup,
        rotation: r.rotation,
        'failed / sent': `${r.failed} / ${r.sent}`,
        'outage ms (keyplane, per target)': r.outageMs.map(round).join(', '),
        'outage ms (client)': round(r.clientOutageMs),
        'PUT -> all serving ms': round(r.putToServingMs),
        'PUT -> reload done ms': round(r.putToDoneMs),
      })),
    );
    const setups = [...new Set(rows.map((r) => r.setup))];
    console.table(
      setups.map((setup) => {
        const rs = rows.filter((r) => r.setup === setup);
        const outages = rs.flatMap((r) => r.outageMs).filter((x): x is number => x !== null);
        const client = rs.map((r) => r.clientOutageMs ?? 0);
        return {
          setup,
          'failed per rotation': rs.map((r) => r.failed).join(' '),
          'outage ms (keyplane) median / max': `${round(median(outages))} / ${round(Math.max(...outages))}`,
          'outage ms (client) median / max': `${round(median(client))} / ${round(Math.max(...client))}`,
          'PUT -> all serving ms (median)': round(median(rs.map((r) => r.putToServingMs))),
          'PUT -> reload done ms (median)': round(median(rs.map((r) => r.putToDoneMs))),
        };
      }),
    );
    console.table(Object.entries(base).map(([what, ms]) => ({ 'the stand-in by hand': what, 'median ms': round(median(ms)), 'min ms': round(Math.min(...ms)), 'max ms': round(Math.max(...ms)) })));

    const restart = median(base['docker restart -> ready']!);
    for (const setup of setups) {
      const rs = rows.filter((r) => r.setup === setup);
      if (setup.startsWith('2 replicas')) {
        const failed = rs.reduce((a, r) => a + r.failed, 0);
        const sent = rs.reduce((a, r) => a + r.sent, 0);
        console.log(`goal, ${setup}: no failed request: ${failed === 0 ? 'met' : 'NOT met'} (${failed} of ${sent} failed)`);
      } else {
        const outages = rs.flatMap((r) => r.outageMs).filter((x): x is number => x !== null);
        const ratio = median(outages) / restart;
        const worst = Math.max(...outages) / restart;
        console.log(
          `goal, ${setup}: outage <= ${GOAL_RATIO} x docker restart -> ready (${round(restart)} ms): ${ratio <= GOAL_RATIO ? 'met' : 'NOT met'} ` +
            `(median ${ratio.toFixed(3)}x, worst rotation ${worst.toFixed(3)}x)`,
        );
      }
    }
  } finally {
    await si.removeAll();
    rmSync(root, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
