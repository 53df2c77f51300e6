import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type Docker from 'dockerode';
import { createLogger, SecretRegistry } from '../src/log';
import { SafeEmitter } from '../src/events';
import { DockerReloader, LABEL_MANAGED_ENV, type DockerReloaderOptions } from '../src/reload/docker';
import { ReloadQueue, type ReloadEvents } from '../src/reload/reload-queue';
import type { AlertEvent, Alerter } from '../src/alerts/alerter';
import { createTestDatabase, type TestDatabase } from './helpers/db';
import { connectDocker, containerNames, ensureStandInImage, StandIns } from './helpers/docker';
import { envFileText, freePort, RevisionFiles } from './helpers/reload';

jest.setTimeout(90_000);

const log = createLogger({ secrets: new SecretRegistry(), silent: true });
// Reads the rendered env file at start, as our compose file's LiteLLM command does.
const READS_ENV_FILE = ['/bin/sh', '-c', 'set -a; . /out/litellm.env; set +a; exec /standin.sh'];

let docker: Docker;
let where: string;
let standIns: StandIns;
let db: TestDatabase;
const dirs: string[] = [];

function tempDir(): string {
  const d = mkdtempSync(path.join(os.tmpdir(), 'kp-reload-docker-'));
  dirs.push(d);
  return d;
}

function reloader(o: Partial<DockerReloaderOptions>): DockerReloader {
  return new DockerReloader({
    docker,
    where,
    containers: [],
    mode: 'recreate',
    stopTimeoutS: 5,
    readyTimeoutMs: 15_000,
    litellmUrl: 'http://127.0.0.1:1',
    log,
    ...o,
  });
}

function name(suffix: string): string {
  return `kp-test-${standIns.runId}-${suffix}`;
}

beforeAll(async () => {
  ({ docker, where } = await connectDocker());
  await ensureStandInImage(docker);
  standIns = new StandIns(docker);
  db = await createTestDatabase();
});

afterEach(async () => {
  await standIns?.removeAll();
});

afterAll(async () => {
  await standIns?.removeAll();
  await db?.drop();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describe('docker reloader, recreate mode', () => {
  it('recreates the container under its name with the new key, keeps the rest, and records the run', async () => {
    const dir = tempDir();
    const files = await RevisionFiles.create(dir);
    const port = await freePort();
    await files.write(1, { OPENROUTER_API_KEY: 'sk-or-old-111111', EXTRA_KEY: 'extra-value-1' });
    const before = await standIns.run({ name: name('one'), port, outDir: dir, env: { OPENROUTER_API_KEY: 'sk-or-old-111111', EXTRA_KEY: 'extra-value-1', KEEP_ME: 'yes' } });
    const beforeInfo = await before.inspect();

    const events = new SafeEmitter<ReloadEvents>();
    const alerts: unknown[] = [];
    const alerter: Alerter = { send: async (e) => void alerts.push(e) };
    const queue = new ReloadQueue({ reloader: reloader({ containers: [name('one')] }), pool: db.pool, log, alerter, emitter: events, backoffMs: 10 });
    const done = events.waitFor('reload:done', (e) => e.revision === 2, 60_000);
    queue.submit(await files.write(2, { OPENROUTER_API_KEY: 'sk-or-new-222222' }));
    const ev = await done;
    expect(ev.result.status).toBe('ok');
    expect(ev.attempts).toBe(1);

    const served = await standIns.servedEnv(port);
    expect(served.OPENROUTER_API_KEY).toBe('sk-or-new-222222');
    expect(served.KEEP_ME).toBe('yes');
    // EXTRA_KEY came from the container's own env, not from keyplane, so it stays.
    expect(served.EXTRA_KEY).toBe('extra-value-1');
    expect(readFileSync(path.join(dir, `standin-${name('one')}.env`), 'utf8')).toContain('OPENROUTER_API_KEY=sk-or-new-222222');

    const after = await docker.getContainer(name('one')).inspect();
    expect(after.Id).not.toBe(beforeInfo.Id);
    expect(after.State.Running).toBe(true);
    expect(after.HostConfig.Init).toBe(true);
    expect(after.HostConfig.NetworkMode).toBe('host');
    expect(after.HostConfig.Binds).toEqual(beforeInfo.HostConfig.Binds);
    expect(after.Config.Cmd).toEqual(beforeInfo.Config.Cmd);
    expect(after.Config.Labels[standIns.runLabel]).toBe(standIns.runId);
    expect(after.Config.Labels[LABEL_MANAGED_ENV]).toBe('OPENROUTER_API_KEY');
    // The old container is gone once the new one is live.
    expect(containerNames(await standIns.list())).toEqual([name('one')]);

    const status = await queue.status();
    expect(status.last).toMatchObject({ revision: 2, reloader: 'docker', attempt: 1, status: 'ok', error: null });
    expect(status.last?.targets).toEqual([expect.objectContaining({ target: name('one'), status: 'ok', error: null })]);
    expect(alerts).toEqual([]);

    // A key that is deleted leaves the container's env on the next recreate (the label remembers it was ours).
    const r3 = await reloader({ containers: [name('one')] }).reload(await files.write(3, { ANTHROPIC_API_KEY: 'sk-ant-333333333' }));
    expect(r3.status).toBe('ok');
    const served3 = await standIns.servedEnv(port);
    expect(served3.OPENROUTER_API_KEY).toBeUndefined();
    expect(served3.ANTHROPIC_API_KEY).toBe('sk-ant-333333333');
    expect(served3.KEEP_ME).toBe('yes');
    await queue.stop();
  });

  it('rolls two replicas one at a time while one always answers', async () => {
    const dir = tempDir();
    const files = await RevisionFiles.create(dir);
    const ports = [await freePort(), await freePort()] as const;
    const group = `kp-test-group-${standIns.runId}`;
    await files.write(1, { OPENROUTER_API_KEY: 'sk-or-old-aaaaaa' });
    // A slower start makes the window in which a replica is down long enough to matter.
    for (const [i, port] of ports.entries()) {
      await standIns.run({ name: name(`rep${i}`), port, outDir: dir, env: { OPENROUTER_API_KEY: 'sk-or-old-aaaaaa', STANDIN_DELAY: '0.4' }, labels: { 'kp.test.group': group } });
    }

    let ticks = 0;
    let gaps = 0;
    const downSeen = [0, 0];
    let polling = true;
    const poller = (async () => {
      while (polling) {
        const answers = await Promise.all(
          ports.map((p) =>
            fetch(`http://127.0.0.1:${p}/health/liveliness`, { signal: AbortSignal.timeout(1_000) }).then(
              (r) => r.ok,
              () => false,
            ),
          ),
        );
        ticks++;
        answers.forEach((ok, i) => {
          if (!ok) downSeen[i]!++;
        });
        if (!answers.some(Boolean)) gaps++;
        await new Promise((r) => setTimeout(r, 50));
      }
    })();

    const result = await reloader({ label: `kp.test.group=${group}` }).reload(await files.write(2, { OPENROUTER_API_KEY: 'sk-or-new-bbbbbb' }));
    polling = false;
    await poller;

    expect(result.status).toBe('ok');
    expect(result.targets.map((t) => [t.target, t.status])).toEqual([
      [name('rep0'), 'ok'],
      [name('rep1'), 'ok'],
    ]);
    // One at a time: the second started only after the first was live.
    expect(result.targets[1]!.startedAt.getTime()).toBeGreaterThanOrEqual(result.targets[0]!.finishedAt.getTime());
    expect(gaps).toBe(0);
    expect(ticks).toBeGreaterThan(5);
    // Each replica really was down for a while, so the poller did watch a roll.
    expect(downSeen[0]).toBeGreaterThan(0);
    expect(downSeen[1]).toBeGreaterThan(0);
    for (const p of ports) expect((await standIns.servedEnv(p)).OPENROUTER_API_KEY).toBe('sk-or-new-bbbbbb');
  });

  it('rolls back a replacement that never gets live, and every replica before it, with the previous files', async () => {
    const dir = tempDir();
    const files = await RevisionFiles.create(dir);
    const ports = [await freePort(), await freePort()] as const;
    await files.write(1, { OPENROUTER_API_KEY: 'sk-or-old-cccccc' });
    const ids: string[] = [];
    for (const [i, port] of ports.entries()) {
      const c = await standIns.run({ name: name(`rb${i}`), port, outDir: dir, env: { OPENROUTER_API_KEY: 'sk-or-old-cccccc' } });
      ids.push(c.id);
    }
    const envBefore = readFileSync(path.join(dir, 'litellm.env'), 'utf8');

    // The new env makes replica rb1 hang at start: rb0 is replaced fine, rb1 never gets live.
    const result = await reloader({ containers: [name('rb0'), name('rb1')], readyTimeoutMs: 2_000 }).reload(
      await files.write(2, { OPENROUTER_API_KEY: 'sk-or-new-dddddd', STANDIN_FAIL: name('rb1') }),
    );
    expect(result.status).toBe('failed');
    expect(result.error).toContain(name('rb1'));
    expect(result.error).toContain('rolled back to the previous files and containers');
    expect(result.targets.map((t) => [t.target, t.status])).toEqual([
      [name('rb0'), 'failed'],
      [name('rb1'), 'failed'],
    ]);
    expect(result.targets[0]!.error).toBe(`rolled back because ${name('rb1')} failed`);

    // The very same containers serve again, with the old key, under their own names; nothing else is left.
    for (const [i, port] of ports.entries()) {
      const info = await docker.getContainer(name(`rb${i}`)).inspect();
      expect(info.Id).toBe(ids[i]);
      expect(info.State.Running).toBe(true);
      expect((await standIns.servedEnv(port)).OPENROUTER_API_KEY).toBe('sk-or-old-cccccc');
    }
    expect(containerNames(await standIns.list())).toEqual([name('rb0'), name('rb1')]);
    expect(readFileSync(path.join(dir, 'litellm.env'), 'utf8')).toBe(envBefore);
  });

  it('reports containers that do not exist by name, without touching the others', async () => {
    const dir = tempDir();
    const files = await RevisionFiles.create(dir);
    const port = await freePort();
    const c = await standIns.run({ name: name('exists'), port, outDir: dir });
    const result = await reloader({ containers: [name('exists'), name('missing')] }).reload(await files.write(1, { OPENROUTER_API_KEY: 'sk-or-xxxxxxxx' }));
    expect(result.status).toBe('failed');
    expect(result.error).toBe(`no such container: ${name('missing')} (KEYPLANE_DOCKER_CONTAINERS)`);
    expect(result.targets).toEqual([
      expect.objectContaining({ target: name('missing'), status: 'failed', error: 'no such container' }),
      expect.objectContaining({ target: name('exists'), status: 'skipped' }),
    ]);
    expect((await docker.getContainer(name('exists')).inspect()).Id).toBe(c.id);
  });

  it('recreates a named container that is stopped, and leaves it stopped', async () => {
    const dir = tempDir();
    const files = await RevisionFiles.create(dir);
    const port = await freePort();
    const c = await standIns.run({ name: name('stopped'), port, outDir: dir, env: { OPENROUTER_API_KEY: 'sk-or-old-eeeeee' } });
    await c.stop({ t: 5 });
    const result = await reloader({ containers: [name('stopped')] }).reload(await files.write(1, { OPENROUTER_API_KEY: 'sk-or-new-ffffff' }));
    expect(result.status).toBe('skipped');
    expect(result.targets[0]).toMatchObject({ target: name('stopped'), status: 'skipped', error: 'not running: recreated with the new env and left stopped' });
    const info = await docker.getContainer(name('stopped')).inspect();
    expect(info.Id).not.toBe(c.id);
    expect(info.State.Running).toBe(false);
    expect(info.Config.Env).toContain('OPENROUTER_API_KEY=sk-or-new-ffffff');
    expect(containerNames(await standIns.list())).toEqual([name('stopped')]);
  });
});

describe('docker reloader, finding liveliness', () => {
  it('waits for Docker health when the container has a healthcheck and no URL label', async () => {
    const dir = tempDir();
    const files = await RevisionFiles.create(dir);
    const port = await freePort();
    await standIns.run({
      name: name('hc'),
      port,
      outDir: dir,
      urlLabel: false,
      healthcheck: { Test: ['CMD', 'wget', '-q', '-O', '/dev/null', `http://127.0.0.1:${port}/health/liveliness`], Interval: 100_000_000, Retries: 50 },
    });
    const result = await reloader({ containers: [name('hc')] }).reload(await files.write(1, { OPENROUTER_API_KEY: 'sk-or-hc-00000001' }));
    expect(result.status).toBe('ok');
    const info = await docker.getContainer(name('hc')).inspect();
    expect(info.State.Health?.Status).toBe('healthy');
    expect((await standIns.servedEnv(port)).OPENROUTER_API_KEY).toBe('sk-or-hc-00000001');
  });

  it('polls KEYPLANE_LITELLM_URL for a container on the host network without a URL label', async () => {
    const dir = tempDir();
    const files = await RevisionFiles.create(dir);
    const port = await freePort();
    await standIns.run({ name: name('hostnet'), port, outDir: dir, urlLabel: false });
    const ok = await reloader({ containers: [name('hostnet')], litellmUrl: standIns.url(port) }).reload(await files.write(1, { OPENROUTER_API_KEY: 'sk-or-hn-00000001' }));
    expect(ok.status).toBe('ok');
    expect((await standIns.servedEnv(port)).OPENROUTER_API_KEY).toBe('sk-or-hn-00000001');
    // A wrong URL never answers: the replacement is rolled back and the old one serves again.
    const bad = await reloader({ containers: [name('hostnet')], litellmUrl: 'http://127.0.0.1:1', readyTimeoutMs: 1_000 }).reload(
      await files.write(2, { OPENROUTER_API_KEY: 'sk-or-hn-00000002' }),
    );
    expect(bad.status).toBe('failed');
    expect(bad.error).toMatch(/http:\/\/127\.0\.0\.1:1\/health\/readiness did not answer within 1000 ms/);
    expect((await standIns.servedEnv(port)).OPENROUTER_API_KEY).toBe('sk-or-hn-00000001');
  });
});

describe('docker reloader, restart mode', () => {
  it('restarts a container whose command reads the env file, which then serves the new key', async () => {
    const dir = tempDir();
    const files = await RevisionFiles.create(dir);
    const port = await freePort();
    await files.write(1, { OPENROUTER_API_KEY: 'sk-or-old-gggggg' });
    const c = await standIns.run({ name: name('restart'), port, outDir: dir, cmd: READS_ENV_FILE });
    expect((await standIns.servedEnv(port)).OPENROUTER_API_KEY).toBe('sk-or-old-gggggg');
    const startedBefore = (await c.inspect()).State.StartedAt;

    const req = await files.write(2, { OPENROUTER_API_KEY: 'sk-or-new-hhhhhh' });
    expect(readFileSync(req.envPath, 'utf8')).toBe(envFileText(req.env));
    const result = await reloader({ containers: [name('restart')], mode: 'restart' }).reload(req);
    expect(result).toMatchObject({ status: 'ok', targets: [expect.objectContaining({ target: name('restart'), status: 'ok' })] });

    const info = await c.inspect();
    expect(info.Id).toBe(c.id);
    expect(info.State.StartedAt).not.toBe(startedBefore);
    expect((await standIns.servedEnv(port)).OPENROUTER_API_KEY).toBe('sk-or-new-hhhhhh');
    // The container's own env is unchanged: the key came from the file.
    expect(info.Config.Env.some((e) => e.startsWith('OPENROUTER_API_KEY='))).toBe(false);
  });

  it('restores the previous files and restarts again when the restarted container never gets live', async () => {
    const dir = tempDir();
    const files = await RevisionFiles.create(dir);
    const port = await freePort();
    await files.write(1, { OPENROUTER_API_KEY: 'sk-or-old-iiiiii' });
    await standIns.run({ name: name('restart-rb'), port, outDir: dir, cmd: READS_ENV_FILE });
    const result = await reloader({ containers: [name('restart-rb')], mode: 'restart', readyTimeoutMs: 2_000 }).reload(
      await files.write(2, { OPENROUTER_API_KEY: 'sk-or-new-jjjjjj', STANDIN_FAIL: 'all' }),
    );
    expect(result.status).toBe('failed');
    expect(result.error).toContain('rolled back to the previous files and containers');
    expect((await standIns.servedEnv(port)).OPENROUTER_API_KEY).toBe('sk-or-old-iiiiii');
    expect(readFileSync(path.join(dir, 'litellm.env'), 'utf8')).toBe(envFileText({ OPENROUTER_API_KEY: 'sk-or-old-iiiiii' }));
  });
});

describe('docker reloader through the queue', () => {
  it('retries with the revision files re-applied after a rollback, then alerts on the final failure', async () => {
    const dir = tempDir();
    const files = await RevisionFiles.create(dir);
    const port = await freePort();
    await files.write(1, { OPENROUTER_API_KEY: 'sk-or-old-kkkkkk' });
    await standIns.run({ name: name('retry'), port, outDir: dir, cmd: READS_ENV_FILE });

    const events = new SafeEmitter<ReloadEvents>();
    const alerts: Array<Omit<AlertEvent, 'at' | 'instance'>> = [];
    const seenEnvFiles: string[] = [];
    events.on('reload:started', () => seenEnvFiles.push(readFileSync(path.join(dir, 'litellm.env'), 'utf8')));
    const queue = new ReloadQueue({
      reloader: reloader({ containers: [name('retry')], mode: 'restart', readyTimeoutMs: 1_500 }),
      pool: db.pool,
      log,
      alerter: { send: async (e) => void alerts.push(e) },
      emitter: events,
      attempts: 2,
      backoffMs: 20,
    });
    const failed = events.waitFor('reload:failed', (e) => e.revision === 2, 60_000);
    queue.submit(await files.write(2, { OPENROUTER_API_KEY: 'sk-or-new-llllll', STANDIN_FAIL: 'all' }));
    const ev = await failed;
    expect(ev).toMatchObject({ attempts: 2, superseded: false });
    // Both tries started from the revision's own files, although the first one rolled them back.
    const rev2 = envFileText({ OPENROUTER_API_KEY: 'sk-or-new-llllll', STANDIN_FAIL: 'all' });
    expect(seenEnvFiles).toEqual([rev2, rev2]);
    expect(readFileSync(path.join(dir, 'litellm.env'), 'utf8')).toBe(envFileText({ OPENROUTER_API_KEY: 'sk-or-old-kkkkkk' }));
    expect((await standIns.servedEnv(port)).OPENROUTER_API_KEY).toBe('sk-or-old-kkkkkk');
    expect(alerts).toEqual([expect.objectContaining({ type: 'reload.failed', revision: 2, reloader: 'docker', attempts: 2 })]);
    // The key values never reach the alert or the recorded status.
    expect(JSON.stringify(alerts)).not.toContain('sk-or-new-llllll');
    const status = await queue.status();
    expect(status.last).toMatchObject({ revision: 2, attempt: 2, status: 'failed' });
    expect(JSON.stringify(status)).not.toContain('sk-or-new-llllll');
    await queue.stop();
  });
});
