import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type Docker from 'dockerode';
import type { AlertEvent } from '../src/alerts/alerter';
import { SafeEmitter } from '../src/events';
import { createLogger, SecretRegistry } from '../src/log';
import { createDockerClient, DockerReloader, type DockerReloaderOptions } from '../src/reload/docker';
import { waitForLiveliness } from '../src/reload/liveliness';
import { ReloadQueue, type ReloadEvents } from '../src/reload/reload-queue';
import { createTestDatabase, type TestDatabase } from './helpers/db';
import { connectDocker, containerNames, ensureStandInImage, StandIns } from './helpers/docker';
import { DockerProxy } from './helpers/docker-proxy';
import { freePort, RevisionFiles } from './helpers/reload';

/**
 * A recreate interrupted by a crash (of keyplane or of the engine) leaves the old container set
 * aside, or LiteLLM down. Each crash state is built by hand on the real engine; the next reload
 * (or recover() at start-up) must put it right.
 */

jest.setTimeout(90_000);

const log = createLogger({ secrets: new SecretRegistry(), silent: true });
let docker: Docker;
let where: string;
let standIns: StandIns;
const dirs: string[] = [];

function tempDir(): string {
  const d = mkdtempSync(path.join(os.tmpdir(), 'kp-reload-recovery-'));
  dirs.push(d);
  return d;
}

function reloader(o: Partial<DockerReloaderOptions>): DockerReloader {
  return new DockerReloader({ docker, where, containers: [], mode: 'recreate', stopTimeoutS: 5, readyTimeoutMs: 15_000, litellmUrl: 'http://127.0.0.1:1', log, ...o });
}

function name(suffix: string): string {
  return `kp-test-${standIns.runId}-${suffix}`;
}

async function alive(port: number): Promise<boolean> {
  return fetch(`http://127.0.0.1:${port}/health/liveliness`, { signal: AbortSignal.timeout(1_000) }).then(
    (r) => r.ok,
    () => false,
  );
}

/** A target serving `key` on a fresh port, with its revision-1 files. */
async function target(suffix: string, key: string, extra: { volumes?: string[]; cmd?: string[]; labels?: Record<string, string> } = {}) {
  const dir = tempDir();
  const files = await RevisionFiles.create(dir);
  const port = await freePort();
  await files.write(1, { OPENROUTER_API_KEY: key });
  const c = await standIns.run({ name: name(suffix), port, outDir: dir, env: { OPENROUTER_API_KEY: key }, ...extra });
  return { dir, files, port, c, name: name(suffix) };
}

beforeAll(async () => {
  ({ docker, where } = await connectDocker());
  await ensureStandInImage(docker);
  standIns = new StandIns(docker);
});

afterEach(async () => {
  await standIns?.removeAll();
});

afterAll(async () => {
  await standIns?.removeAll();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describe('docker reload after a crash in the middle of a recreate', () => {
  it('between the rename and the create (the target is missing): the old one gets its name back and is recreated', async () => {
    const t = await target('rn', 'sk-or-old-rn000001');
    await t.c.rename({ name: `${t.name}-kp-prev-a1b2c3` });
    const result = await reloader({ containers: [t.name] }).reload(await t.files.write(2, { OPENROUTER_API_KEY: 'sk-or-new-rn000002' }));
    expect(result.status).toBe('ok');
    expect(containerNames(await standIns.list())).toEqual([t.name]);
    expect((await standIns.servedEnv(t.port)).OPENROUTER_API_KEY).toBe('sk-or-new-rn000002');
  });

  it('between the stop and the start (LiteLLM down): the replacement that never ran goes, the old one comes back, then the reload', async () => {
    const t = await target('ss', 'sk-or-old-ss000001');
    await t.c.rename({ name: `${t.name}-kp-prev-0d0d0d` });
    await standIns.create({ name: t.name, port: t.port, outDir: t.dir, env: { OPENROUTER_API_KEY: 'sk-or-new-ss000002' } });
    await t.c.stop({ t: 5 });
    expect(await alive(t.port)).toBe(false);

    const result = await reloader({ containers: [t.name] }).reload(await t.files.write(2, { OPENROUTER_API_KEY: 'sk-or-new-ss000002' }));
    expect(result).toMatchObject({ status: 'ok', targets: [expect.objectContaining({ target: t.name, status: 'ok' })] });
    expect(containerNames(await standIns.list())).toEqual([t.name]);
    expect((await standIns.servedEnv(t.port)).OPENROUTER_API_KEY).toBe('sk-or-new-ss000002');
  });

  it('after the replacement got live (the old one not yet removed): the old one goes', async () => {
    const t = await target('fin', 'sk-or-old-fin00001');
    await t.c.rename({ name: `${t.name}-kp-prev-f1f1f1` });
    await t.c.stop({ t: 5 });
    const replacement = await standIns.run({ name: t.name, port: t.port, outDir: t.dir, env: { OPENROUTER_API_KEY: 'sk-or-new-fin00002' } });
    expect(await reloader({ containers: [t.name] }).recover()).toEqual([`${t.name}-kp-prev-f1f1f1: removed`]);
    expect(containerNames(await standIns.list())).toEqual([t.name]);
    expect((await docker.getContainer(t.name).inspect()).Id).toBe(replacement.id);
  });

  it('recover() at start-up brings LiteLLM back without a reload: the very same container, running again', async () => {
    const t = await target('boot', 'sk-or-old-boot0001');
    await t.c.rename({ name: `${t.name}-kp-prev-b0b0b0` });
    await standIns.create({ name: t.name, port: t.port, outDir: t.dir, env: { OPENROUTER_API_KEY: 'sk-or-new-boot0002' } });
    await t.c.stop({ t: 5 });
    expect(await reloader({ containers: [t.name] }).recover()).toEqual([
      `${t.name}: removed the replacement that never ran`,
      `${t.name}-kp-prev-b0b0b0: renamed back to ${t.name}`,
      `${t.name}: started again`,
    ]);
    const info = await docker.getContainer(t.name).inspect();
    expect(info.Id).toBe(t.c.id);
    expect(info.State.Running).toBe(true);
    await waitForLiveliness(standIns.url(t.port), { timeoutMs: 15_000 });
    expect((await standIns.servedEnv(t.port)).OPENROUTER_API_KEY).toBe('sk-or-old-boot0001');
    // Nothing left to do the second time.
    expect(await reloader({ containers: [t.name] }).recover()).toEqual([]);
  });

  it('a container that was stopped when it was set aside gets its name back and stays stopped', async () => {
    const t = await target('was-stopped', 'sk-or-old-ws000001');
    await t.c.stop({ t: 5 });
    await t.c.rename({ name: `${t.name}-kp-prev-5e5e5e-stopped` });
    expect(await reloader({ containers: [t.name] }).recover()).toEqual([`${t.name}-kp-prev-5e5e5e-stopped: renamed back to ${t.name}`]);
    const info = await docker.getContainer(t.name).inspect();
    expect(info.Id).toBe(t.c.id);
    expect(info.State.Running).toBe(false);
  });

  it('finds what was set aside among the labelled targets, and leaves other containers alone', async () => {
    const group = `kp-test-recover-${standIns.runId}`;
    const t = await target('lbl', 'sk-or-old-lbl00001', { labels: { 'kp.test.group': group } });
    const bystander = await target('other', 'sk-or-other-000001');
    await bystander.c.rename({ name: `${bystander.name}-kp-prev-0a0a0a` });
    await t.c.rename({ name: `${t.name}-kp-prev-1a1a1a` });
    const result = await reloader({ label: `kp.test.group=${group}` }).reload(await t.files.write(2, { OPENROUTER_API_KEY: 'sk-or-new-lbl00002' }));
    expect(result.status).toBe('ok');
    expect((await standIns.servedEnv(t.port)).OPENROUTER_API_KEY).toBe('sk-or-new-lbl00002');
    expect(containerNames(await standIns.list())).toEqual([`${bystander.name}-kp-prev-0a0a0a`, t.name].sort());
  });
});

describe('docker recreate keeps volumes', () => {
  it('an anonymous volume (-v /data) and what it holds survive the recreate', async () => {
    // The first start writes the revision's VOL_MARK into the volume; later starts keep what is there, and serve it.
    const cmd = ['/bin/sh', '-c', '[ -f /data/keep ] || echo "$VOL_MARK" > /data/keep; mkdir -p /tmp/www; cat /data/keep > /tmp/www/keep; exec /standin.sh'];
    const dir = tempDir();
    const files = await RevisionFiles.create(dir);
    const port = await freePort();
    await files.write(1, { VOL_MARK: 'first' });
    const c = await standIns.run({ name: name('vol'), port, outDir: dir, env: { VOL_MARK: 'first' }, volumes: ['/data'], cmd });
    const before = (await c.inspect()).Mounts.find((m) => m.Destination === '/data')!;
    expect(before.Type).toBe('volume');

    const result = await reloader({ containers: [name('vol')] }).reload(await files.write(2, { VOL_MARK: 'second' }));
    expect(result.status).toBe('ok');
    const after = await docker.getContainer(name('vol')).inspect();
    expect(after.Id).not.toBe(c.id);
    expect(after.Mounts.find((m) => m.Destination === '/data')).toMatchObject({ Type: 'volume', Name: before.Name });
    expect((await standIns.servedEnv(port)).VOL_MARK).toBe('second');
    const kept = await fetch(`${standIns.url(port)}/keep`, { signal: AbortSignal.timeout(2_000) });
    expect(await kept.text()).toBe('first\n');
    // The old container went without its volume.
    expect((await docker.getVolume(before.Name!).inspect()).Name).toBe(before.Name);
  });
});

describe('the Docker engine stops during a reload', () => {
  let proxy: DockerProxy;
  let db: TestDatabase;
  beforeAll(async () => {
    db = await createTestDatabase();
  });
  afterAll(async () => {
    await db.drop();
  });
  afterEach(async () => {
    await proxy?.close();
  });

  it('the reload fails with a clear message, is retried, and succeeds once the engine is back, LiteLLM up again', async () => {
    const t = await target('engine', 'sk-or-old-eng00001');
    proxy = await DockerProxy.start(where.slice('unix://'.length));
    const viaProxy = createDockerClient(proxy.url, 30_000);
    const events = new SafeEmitter<ReloadEvents>();
    const alerts: AlertEvent[] = [];
    const queue = new ReloadQueue({
      reloader: reloader({ ...viaProxy, containers: [t.name] }),
      pool: db.pool,
      log,
      alerter: { send: async (e) => void alerts.push(e as AlertEvent) },
      emitter: events,
      attempts: 3,
      // Room for the checks below before the retry: the engine comes back only after them.
      backoffMs: 3_000,
    });
    // The engine goes away as the replacement is about to start: the old one is already stopped.
    const stopped = proxy.stopWhen((line) => /^POST \S*\/containers\/[^/]+\/start/.test(line));
    const retry = events.waitFor('reload:retry', () => true, 60_000);
    const done = events.waitFor('reload:done', (e) => e.revision === 2, 60_000);
    queue.submit(await t.files.write(2, { OPENROUTER_API_KEY: 'sk-or-new-eng00002' }));
    await stopped;
    const failed = await retry;
    expect(failed.error).toContain(`${t.name}: cannot reach the Docker engine at ${proxy.url}`);
    expect(failed.error).toContain('rollback incomplete');
    expect(failed.error).toContain('the next reload puts back what is left');
    // Half done: LiteLLM is down, its old container set aside.
    expect(await alive(t.port)).toBe(false);
    expect(containerNames(await standIns.list()).some((n) => n.startsWith(`${t.name}-kp-prev-`))).toBe(true);

    await proxy.restart();
    const ev = await done;
    expect(ev.result.status).toBe('ok');
    expect(ev.attempts).toBe(2);
    expect(containerNames(await standIns.list())).toEqual([t.name]);
    expect((await standIns.servedEnv(t.port)).OPENROUTER_API_KEY).toBe('sk-or-new-eng00002');
    expect(alerts).toEqual([]);
    await queue.stop();
  });
});
