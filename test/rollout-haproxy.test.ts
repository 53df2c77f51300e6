import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import type { ReloadEvents } from '../src/reload/reload-queue';
import { startTestApp, type TestApp } from './helpers/app';
import { connectDocker, ensureStandInImage, StandIns } from './helpers/docker';
import { DRAINING_STANDIN_CMD } from './helpers/draining-standin';
import { startHaproxy, type Haproxy } from './helpers/haproxy';
import { LoadClient } from './helpers/load-client';
import { eventually, freePort } from './helpers/reload';
import { reloadWiring } from './helpers/reload-app';

/**
 * The documented HA profile, end to end: two LiteLLM stand-ins behind Debian's haproxy running
 * compose/haproxy.cfg, keyplane restarting them (restart mode, the env file read at every start,
 * as in our compose file) with its default settle time, and a client sending requests through
 * haproxy without pause over ten rotations in a row. Not one request may fail, and at no moment
 * may HAProxy be without a replica that is in its rotation and ready: HAProxy's retries hide a
 * short gap from the client (with KEYPLANE_ROLLOUT_SETTLE=0s no request failed in a run, while
 * for about 2 s per rotation no replica was in service), so the gap is watched for itself.
 */
jest.setTimeout(300_000);

const ROTATIONS = 10;
// Slow to start, like LiteLLM (about 9 s for the real one; shorter here to keep CI quick), and
// ready a moment after it is live, so that a reloader that waited for liveliness would be caught.
const STANDIN_ENV = { STANDIN_DELAY: '2', STANDIN_READY_DELAY: '0.5' };

let standIns: StandIns | undefined;
let hp: Haproxy | undefined;
let client: LoadClient | undefined;
let app: TestApp | undefined;
let out: string | undefined;

afterAll(async () => {
  await client?.stop();
  await app?.close();
  await hp?.stop();
  await standIns?.removeAll();
  if (out) rmSync(out, { recursive: true, force: true });
});

describe('rotations behind haproxy (the HA profile)', () => {
  it('fail no request over ten rotations in a row, and leave every replica serving the last key', async () => {
    const { docker, where } = await connectDocker();
    await ensureStandInImage(docker);
    const si = (standIns = new StandIns(docker));
    out = mkdtempSync(path.join(os.tmpdir(), 'kp-rollout-haproxy-'));
    const label = `keyplane.test.rollout=${si.runId}`;
    const ports = [await freePort(), await freePort()] as const;
    const names = ports.map((_, i) => `kp-test-${si.runId}-litellm-${i + 1}`);
    await Promise.all(
      ports.map((port, i) => si.run({ name: names[i]!, port, outDir: out!, cmd: DRAINING_STANDIN_CMD, env: STANDIN_ENV, labels: { 'keyplane.test.rollout': si.runId } })),
    );
    hp = await startHaproxy({ replicas: [`127.0.0.1:${ports[0]}`, `127.0.0.1:${ports[1]}`] });
    await hp.waitAllUp();

    client = new LoadClient(hp.url, { workers: 2, pauseAfterFailureMs: 10 });
    const c = client;
    c.start();
    const service = hp.watchService(ports.map((p) => si.url(p)), () => c.now());

    // keyplane's own first render restarts both replicas too: a rollout under load like the others.
    app = await startTestApp({
      env: { KEYPLANE_OUTPUT_DIR: out, KEYPLANE_RELOAD: 'docker', KEYPLANE_DOCKER_LABEL: label, KEYPLANE_DOCKER_MODE: 'restart', DOCKER_HOST: where },
    });
    const { queue, events } = reloadWiring(app.kp);
    // What keyplane did and when, on the client's clock, for the failure message.
    const timeline: string[] = [];
    const done: Array<ReloadEvents['reload:done']> = [];
    const failed: Array<ReloadEvents['reload:failed']> = [];
    const offs = [
      events.on('reload:phase', (e) => timeline.push(`${c.now()} ms: r${e.revision} ${e.target} ${e.phase}${e.outageMs !== undefined ? ` (outage ${e.outageMs} ms)` : ''}`)),
      events.on('reload:done', (e) => done.push(e)),
      events.on('reload:failed', (e) => failed.push(e)),
    ];

    const served = async (port: number): Promise<string | undefined> => (await si.servedEnv(port)).OPENROUTER_API_KEY;
    let key = '';
    for (let i = 1; i <= ROTATIONS; i++) {
      key = `sk-or-v1-rollout-${i}-${randomBytes(8).toString('hex')}`;
      timeline.push(`${c.now()} ms: PUT ${i}`);
      await app.api().put('/api/v1/admin/platform-keys/openrouter').send({ api_key: key }).expect(200);
      for (const port of ports) await eventually(async () => ((await served(port)) === key ? true : undefined), 90_000, `the replica on ${port} to serve rotation ${i}'s key`);
    }
    // The last replica settles too: the client keeps going until the rollout is over.
    await queue.whenIdle();
    await c.stop();
    const gaps = await service.stop();
    for (const off of offs) off();

    const failures = c.failures();
    const report = [
      ...failures.map((f) => `${f.startMs} ms: request failed: ${f.status ?? f.error}`),
      ...gaps.map((g) => `${g.atMs} ms: no replica in service: haproxy ${JSON.stringify(g.states)}, ready ${JSON.stringify(g.ready)}`),
    ].sort((a, b) => parseInt(a, 10) - parseInt(b, 10));
    expect(
      report.length
        ? `${failures.length} of ${c.records.length} requests failed; ${gaps.length} samples without a replica in service:\n${report.join('\n')}\n\nkeyplane:\n${timeline.join('\n')}\n\nhaproxy:\n${hp.logs().slice(-4_000)}`
        : '',
    ).toBe('');

    // It did watch rollouts: each rotation (and the first render) restarted both replicas, one at
    // a time, under a steady stream of requests that both replicas answered.
    expect(failed).toEqual([]);
    expect(done.length).toBeGreaterThanOrEqual(ROTATIONS);
    for (const d of done) expect(d.result.targets.map((t) => [t.target, t.status])).toEqual(names.map((n) => [n, 'ok']));
    expect(c.records.length).toBeGreaterThan(ROTATIONS * 100);
    for (const n of names) expect(c.records.filter((r) => r.replica === n).length).toBeGreaterThan(ROTATIONS * 10);
    for (const port of ports) expect(await served(port)).toBe(key);
  });
});
