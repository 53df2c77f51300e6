import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import type Docker from 'dockerode';
import { LogAlerter } from '../../src/alerts/alerter';
import { ReloadQueue } from '../../src/reload/reload-queue';
import { createReloader } from '../../src/reload/reloader-factory';
import type { DockerMode } from '../../src/config';
import { waitForLiveliness } from '../../src/reload/liveliness';
import { connectDocker, ensureStandInImage, StandIns, STANDIN_IMAGE } from '../helpers/docker';
import { freePort, RevisionFiles } from '../helpers/reload';
import { reloadWiring } from '../helpers/reload-app';
import { startBenchKeyplane } from './bench-env';

/**
 * `npm run bench:reload`: how long a key rotation takes until the LiteLLM stand-in serves the new
 * value, over ROTATIONS rotations, for `recreate` and `restart`, from a PUT through the admin API
 * (watcher -> render -> write -> reload queue -> Docker) and from ReloadQueue.submit(); next to
 * the time the same container work takes by hand (Docker calls only), so that the difference is
 * what keyplane adds. Goal: at most 300 ms added.
 */
const ROTATIONS = Number(process.env.BENCH_ROTATIONS ?? 20);
// As in compose/docker-compose.yml: read the env file, when there is one, at every start.
const READS_ENV_FILE = ['/bin/sh', '-c', 'if [ -f /out/litellm.env ]; then set -a; . /out/litellm.env; set +a; fi; exec /standin.sh'];
const POLL_MS = 5;

interface Series {
  name: string;
  ms: number[];
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]!;
}

async function served(port: number): Promise<string | undefined> {
  try {
    const res = await fetch(`http://127.0.0.1:${port}/env`, { signal: AbortSignal.timeout(500) });
    if (!res.ok) return undefined;
    return /^OPENROUTER_API_KEY=(.*)$/m.exec(await res.text())?.[1];
  } catch {
    return undefined;
  }
}

async function untilServed(port: number, key: string, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while ((await served(port)) !== key) {
    if (Date.now() > deadline) throw new Error(`the stand-in on ${port} did not serve the new key within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
}

async function live(port: number): Promise<void> {
  await waitForLiveliness(`http://127.0.0.1:${port}`, { timeoutMs: 60_000, intervalMs: POLL_MS });
}

/** The container work alone: a fresh start; stop + start of a replacement; a restart. */
async function baselines(docker: Docker, standIns: StandIns, dir: string): Promise<Series[]> {
  const port = await freePort();
  const name = `kp-bench-${standIns.runId}-base`;
  const spec = (n: string): Docker.ContainerCreateOptions => ({
    name: n,
    Image: STANDIN_IMAGE,
    Cmd: ['/standin.sh'],
    Env: [`STANDIN_NAME=${n}`, `STANDIN_PORT=${port}`],
    Labels: { [standIns.runLabel]: standIns.runId },
    HostConfig: { NetworkMode: 'host', Init: true, Binds: [`${dir}:/out`] },
  });
  const start: number[] = [];
  const replace: number[] = [];
  const restart: number[] = [];
  let current = await docker.createContainer(spec(`${name}-0`));
  await current.start();
  await live(port);
  for (let i = 1; i <= ROTATIONS; i++) {
    const next = await docker.createContainer(spec(`${name}-${i}`));
    const t0 = performance.now();
    await current.stop({ t: 10 });
    const t1 = performance.now();
    await next.start();
    await live(port);
    const t2 = performance.now();
    replace.push(t2 - t0);
    start.push(t2 - t1);
    await current.remove({ force: true });
    current = next;
  }
  for (let i = 0; i < ROTATIONS; i++) {
    const t0 = performance.now();
    await current.restart({ t: 10 });
    await live(port);
    restart.push(performance.now() - t0);
  }
  await current.remove({ force: true });
  return [
    { name: 'by hand: start -> live', ms: start },
    { name: 'by hand: stop old + start new -> live', ms: replace },
    { name: 'by hand: docker restart -> live', ms: restart },
  ];
}

/** Rotations handed straight to the queue (files written by the test's writer). */
async function fromSubmit(standIns: StandIns, mode: DockerMode, dir: string, host: string): Promise<Series> {
  const files = await RevisionFiles.create(dir);
  const port = await freePort();
  const name = `kp-bench-${standIns.runId}-submit-${mode}`;
  await files.write(1, { OPENROUTER_API_KEY: 'sk-or-bench-initial' });
  await standIns.run({ name, port, outDir: dir, cmd: mode === 'restart' ? READS_ENV_FILE : undefined, env: { OPENROUTER_API_KEY: 'sk-or-bench-initial' } });
  const bench = await startBenchKeyplane();
  try {
    const settings = { ...bench.kp.settings, reload: 'docker' as const, dockerContainers: [name], dockerMode: mode, dockerHost: host };
    const queue = new ReloadQueue({ reloader: createReloader(settings, { log: bench.kp.log }), pool: bench.kp.pool, log: bench.kp.log, alerter: new LogAlerter(bench.kp.log) });
    const ms: number[] = [];
    for (let i = 1; i <= ROTATIONS; i++) {
      const key = `sk-or-bench-${mode}-${i}-${randomBytes(4).toString('hex')}`;
      const req = await files.write(i + 1, { OPENROUTER_API_KEY: key });
      const t0 = performance.now();
      queue.submit(req);
      await untilServed(port, key);
      ms.push(performance.now() - t0);
      await queue.whenIdle();
      const last = (await queue.status()).last;
      if (last?.status !== 'ok') throw new Error(`reload ${i + 1} ended ${last?.status}: ${last?.error ?? ''}`);
    }
    await queue.stop();
    return { name: `keyplane ${mode}: submit() -> serving`, ms };
  } finally {
    await bench.close();
  }
}

/**
 * Rotations through the admin API: PUT -> NOTIFY -> watcher -> render -> write -> queue -> Docker.
 */
async function fromPut(standIns: StandIns, mode: DockerMode, dir: string, host: string): Promise<Series> {
  const port = await freePort();
  const name = `kp-bench-${standIns.runId}-put-${mode}`;
  await standIns.run({ name, port, outDir: dir, cmd: mode === 'restart' ? READS_ENV_FILE : undefined });
  const bench = await startBenchKeyplane({
    KEYPLANE_OUTPUT_DIR: dir,
    KEYPLANE_RELOAD: 'docker',
    KEYPLANE_DOCKER_CONTAINERS: name,
    KEYPLANE_DOCKER_MODE: mode,
    DOCKER_HOST: host,
  });
  const { kp } = bench;
  const headers = { authorization: `Bearer ${bench.token}`, 'content-type': 'application/json' };
  const put = async (key: string): Promise<void> => {
    const res = await fetch(`${kp.url!}/api/v1/admin/platform-keys/openrouter`, { method: 'PUT', headers, body: JSON.stringify({ api_key: key }) });
    if (res.status !== 200) throw new Error(`PUT answered ${res.status}: ${await res.text()}`);
  };
  try {
    const { queue } = reloadWiring(kp);
    // A first key, so that every measured rotation replaces one.
    const first = `sk-or-bench-put-initial-${randomBytes(4).toString('hex')}`;
    await put(first);
    await untilServed(port, first);
    await queue.whenIdle();
    const ms: number[] = [];
    for (let i = 1; i <= ROTATIONS; i++) {
      const key = `sk-or-bench-put-${mode}-${i}-${randomBytes(4).toString('hex')}`;
      const t0 = performance.now();
      await put(key);
      await untilServed(port, key);
      ms.push(performance.now() - t0);
      await queue.whenIdle();
      const last = (await queue.status()).last;
      if (last?.status !== 'ok') throw new Error(`reload after PUT ${i} ended ${last?.status}: ${last?.error ?? ''}`);
    }
    return { name: `keyplane ${mode}: PUT -> serving`, ms };
  } finally {
    await bench.close();
  }
}

async function main(): Promise<void> {
  const { docker, where } = await connectDocker();
  await ensureStandInImage(docker);
  const standIns = new StandIns(docker);
  const root = mkdtempSync(path.join(os.tmpdir(), 'kp-bench-reload-'));
  const sub = (n: string): string => path.join(root, n);
  try {
    const series: Series[] = [];
    series.push(...(await baselines(docker, standIns, root)));
    for (const mode of ['recreate', 'restart'] as const) {
      series.push(await fromPut(standIns, mode, sub(`put-${mode}`), where));
      await standIns.removeAll();
      series.push(await fromSubmit(standIns, mode, sub(`submit-${mode}`), where));
      await standIns.removeAll();
    }
    const byName = new Map(series.map((s) => [s.name, median(s.ms)]));
    console.log(`bench:reload: ${ROTATIONS} rotations each, Docker at ${where}, stand-in ${STANDIN_IMAGE} (busybox httpd, host network)`);
    console.table(
      series.map((s) => ({
        series: s.name,
        'median ms': Math.round(median(s.ms)),
        'p90 ms': Math.round(pct(s.ms, 90)),
        'min ms': Math.round(Math.min(...s.ms)),
        'max ms': Math.round(Math.max(...s.ms)),
      })),
    );
    const added = (a: string, b: string): number => Math.round(byName.get(a)! - byName.get(b)!);
    const rows = [
      { comparison: 'recreate PUT -> serving, minus stop old + start new by hand', 'added ms (median)': added('keyplane recreate: PUT -> serving', 'by hand: stop old + start new -> live') },
      { comparison: 'recreate submit() -> serving, minus stop old + start new by hand', 'added ms (median)': added('keyplane recreate: submit() -> serving', 'by hand: stop old + start new -> live') },
      { comparison: 'restart PUT -> serving, minus docker restart by hand', 'added ms (median)': added('keyplane restart: PUT -> serving', 'by hand: docker restart -> live') },
      { comparison: 'restart submit() -> serving, minus docker restart by hand', 'added ms (median)': added('keyplane restart: submit() -> serving', 'by hand: docker restart -> live') },
    ];
    console.table(rows);
    const worst = Math.max(...rows.map((r) => r['added ms (median)']));
    console.log(`goal: keyplane adds <= 300 ms beyond the container's own work: ${worst <= 300 ? 'met' : 'NOT met'} (worst ${worst} ms)`);
  } finally {
    await standIns.removeAll();
    rmSync(root, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
