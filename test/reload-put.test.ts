import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { AlertEvent } from '../src/alerts/alerter';
import { startTestApp, type TestApp } from './helpers/app';
import { connectDocker, ensureStandInImage, StandIns } from './helpers/docker';
import { freePort } from './helpers/reload';
import { reloadWiring } from './helpers/reload-app';
import { recordEvents } from './helpers/wait';

jest.setTimeout(90_000);

const dirs: string[] = [];
function tempDir(): string {
  const d = mkdtempSync(path.join(os.tmpdir(), 'kp-reload-put-'));
  dirs.push(d);
  return d;
}

const closeAfter: Array<() => Promise<void>> = [];

afterAll(async () => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
  for (const c of closeAfter) await c();
});

describe('a PUT through the admin API', () => {
  let app: TestApp | undefined;
  let standIns: StandIns | undefined;

  afterEach(async () => {
    await app?.close();
    await standIns?.removeAll();
    app = undefined;
  });

  it('leads to a recreated LiteLLM container that serves the new key', async () => {
    const { docker, where } = await connectDocker();
    await ensureStandInImage(docker);
    standIns = new StandIns(docker);
    const out = tempDir();
    const port = await freePort();
    const name = `kp-test-${standIns.runId}-put`;
    const before = await standIns.run({ name, port, outDir: out });
    app = await startTestApp({
      env: { KEYPLANE_OUTPUT_DIR: out, KEYPLANE_RELOAD: 'docker', KEYPLANE_DOCKER_CONTAINERS: name, DOCKER_HOST: where },
    });
    const wiring = reloadWiring(app.kp);
    // The first render at start reloads too; wait for it so that the next reload is the PUT's.
    await wiring.queue.whenIdle();

    const rendered = wiring.events.waitFor('render:done', (r) => r.changedKeys.includes('openrouter'), 30_000);
    // Recorded from before the PUT: the reload's revision is known only once the render reports.
    const reloads = recordEvents(wiring.events, 'reload:done');
    const key = 'sk-or-v1-put-rotated-0123456789';
    await app.api().put('/api/v1/admin/platform-keys/openrouter').send({ api_key: key }).expect(200);
    const revision = (await rendered).revision;
    const ev = await reloads.waitFor((e) => e.revision === revision, 60_000);
    reloads.stop();
    expect(ev.result).toMatchObject({ status: 'ok', targets: [expect.objectContaining({ target: name, status: 'ok' })] });

    expect((await standIns.servedEnv(port)).OPENROUTER_API_KEY).toBe(key);
    const info = await docker.getContainer(name).inspect();
    expect(info.Id).not.toBe(before.id);
    expect((await wiring.queue.status()).last).toMatchObject({ revision, reloader: 'docker', status: 'ok' });
    expect(app.logs()).not.toContain(key);
  });

  it('keeps the API working without a Docker socket, and says why the reload failed', async () => {
    const out = tempDir();
    const sock = path.join(out, 'no-docker.sock');
    // The alert arrives at a webhook receiver on loopback, as it would at an operator's.
    const alerts: AlertEvent[] = [];
    const receiver = createServer((req, res) => {
      let body = '';
      req.on('data', (c) => (body += c));
      req.on('end', () => {
        alerts.push(JSON.parse(body) as AlertEvent);
        res.end();
      });
    });
    await new Promise<void>((r) => receiver.listen(0, '127.0.0.1', r));
    closeAfter.push(() => new Promise((r) => receiver.close(() => r())));
    app = await startTestApp({
      env: {
        KEYPLANE_OUTPUT_DIR: path.join(out, 'litellm'),
        KEYPLANE_RELOAD: 'docker',
        KEYPLANE_DOCKER_CONTAINERS: 'litellm',
        DOCKER_HOST: `unix://${sock}`,
        KEYPLANE_ALERT_WEBHOOK: `http://127.0.0.1:${(receiver.address() as AddressInfo).port}/alerts`,
      },
    });
    const wiring = reloadWiring(app.kp);
    await wiring.queue.whenIdle();
    const rendered = wiring.events.waitFor('render:done', (r) => r.changedKeys.includes('openrouter'), 30_000);
    const failures = recordEvents(wiring.events, 'reload:failed');
    await app.api().put('/api/v1/admin/platform-keys/openrouter').send({ api_key: 'sk-or-v1-nodocker-0123456789' }).expect(200);
    const revision = (await rendered).revision;
    const ev = await failures.waitFor((e) => e.revision === revision, 30_000);
    failures.stop();
    const message = `cannot reach the Docker engine at unix://${sock} (ENOENT): is Docker running, and is its socket mounted into keyplane's container? Set DOCKER_HOST to point at it`;
    expect(ev.result.error).toBe(message);
    await app.api().get('/healthz').expect(200);
    await app.api().get('/api/v1/admin/platform-keys/openrouter').expect(200);
    expect((await wiring.queue.status()).last).toMatchObject({ revision, attempt: 3, reloader: 'docker', status: 'failed', error: message });
    expect(alerts.filter((a) => a.revision === revision)).toEqual([expect.objectContaining({ type: 'reload.failed', reloader: 'docker', attempts: 3, error: message })]);
    expect(app.logs()).not.toContain('sk-or-v1-nodocker-0123456789');
  });
});
