import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { AlertEvent } from '../src/alerts/alerter';
import { startTestApp, type TestApp } from './helpers/app';
import { connectDocker, ensureStandInImage, StandIns } from './helpers/docker';
import { freePort } from './helpers/reload';
import { wireSyncAndReload, type ReloadWiring } from './helpers/reload-app';

jest.setTimeout(90_000);

const dirs: string[] = [];
function tempDir(): string {
  const d = mkdtempSync(path.join(os.tmpdir(), 'kp-reload-put-'));
  dirs.push(d);
  return d;
}

afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describe('a PUT through the admin API', () => {
  let app: TestApp | undefined;
  let wiring: ReloadWiring | undefined;
  let standIns: StandIns | undefined;

  afterEach(async () => {
    await wiring?.stop();
    await app?.close();
    await standIns?.removeAll();
    wiring = undefined;
    app = undefined;
  });

  it('leads to a recreated LiteLLM container that serves the new key', async () => {
    const { docker, where } = await connectDocker();
    await ensureStandInImage(docker);
    standIns = new StandIns(docker);
    const out = tempDir();
    const port = await freePort();
    const name = `kp-test-${standIns.runId}-put`;
    app = await startTestApp({
      env: { KEYPLANE_OUTPUT_DIR: out, KEYPLANE_RELOAD: 'docker', KEYPLANE_DOCKER_CONTAINERS: name, DOCKER_HOST: where },
    });
    const before = await standIns.run({ name, port, outDir: out });
    wiring = await wireSyncAndReload(app.kp);
    // The first render at start reloads too; wait for it so that the next reload is the PUT's.
    await wiring.queue.whenIdle();

    const rendered = wiring.events.waitFor('render:done', (r) => r.changedKeys.includes('openrouter'), 30_000);
    const key = 'sk-or-v1-put-rotated-0123456789';
    await app.api().put('/api/v1/admin/platform-keys/openrouter').send({ api_key: key }).expect(200);
    const revision = (await rendered).revision;
    const ev = await wiring.events.waitFor('reload:done', (e) => e.revision === revision, 60_000);
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
    app = await startTestApp({
      env: { KEYPLANE_OUTPUT_DIR: path.join(out, 'litellm'), KEYPLANE_RELOAD: 'docker', KEYPLANE_DOCKER_CONTAINERS: 'litellm', DOCKER_HOST: `unix://${sock}` },
    });
    const alerts: Array<Omit<AlertEvent, 'at' | 'instance'>> = [];
    wiring = await wireSyncAndReload(app.kp, { backoffMs: 5, alerter: { send: async (e) => void alerts.push(e) } });
    await wiring.queue.whenIdle();
    const rendered = wiring.events.waitFor('render:done', (r) => r.changedKeys.includes('openrouter'), 30_000);
    await app.api().put('/api/v1/admin/platform-keys/openrouter').send({ api_key: 'sk-or-v1-nodocker-0123456789' }).expect(200);
    const revision = (await rendered).revision;
    const ev = await wiring.events.waitFor('reload:failed', (e) => e.revision === revision, 30_000);
    const message = `cannot reach the Docker engine at unix://${sock} (ENOENT): is Docker running, and is its socket mounted into keyplane's container? Set DOCKER_HOST to point at it`;
    expect(ev.result.error).toBe(message);
    await app.api().get('/healthz').expect(200);
    await app.api().get('/api/v1/admin/platform-keys/openrouter').expect(200);
    expect((await wiring.queue.status()).last).toMatchObject({ revision, attempt: 3, reloader: 'docker', status: 'failed', error: message });
    expect(alerts.filter((a) => a.revision === revision)).toEqual([expect.objectContaining({ type: 'reload.failed', reloader: 'docker', attempts: 3, error: message })]);
    expect(app.logs()).not.toContain('sk-or-v1-nodocker-0123456789');
  });
});
