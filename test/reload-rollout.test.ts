import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type Docker from 'dockerode';
import client from 'prom-client';
import type { AlertEvent, Alerter } from '../src/alerts/alerter';
import { SafeEmitter } from '../src/events';
import { createLogger, SecretRegistry } from '../src/log';
import { CommandReloader } from '../src/reload/command';
import { DockerReloader, type DockerReloaderOptions } from '../src/reload/docker';
import { checkLiveliness, checkReadiness } from '../src/reload/liveliness';
import { ReloadQueue, type ReloadEvents } from '../src/reload/reload-queue';
import { settle, type RolloutProgress, type TargetPhase } from '../src/reload/rollout';
import { createTestDatabase, type TestDatabase } from './helpers/db';
import { connectDocker, ensureStandInImage, StandIns } from './helpers/docker';
import { eventually, freePort, RevisionFiles, startLivelinessServer } from './helpers/reload';

jest.setTimeout(120_000);

const log = createLogger({ secrets: new SecretRegistry(), silent: true });
const READS_ENV_FILE = ['/bin/sh', '-c', 'set -a; . /out/litellm.env; set +a; exec /standin.sh'];

let docker: Docker;
let where: string;
let standIns: StandIns;
let db: TestDatabase;
const dirs: string[] = [];

function tempDir(): string {
  const d = mkdtempSync(path.join(os.tmpdir(), 'kp-rollout-'));
  dirs.push(d);
  return d;
}

function reloader(o: Partial<DockerReloaderOptions>): DockerReloader {
  return new DockerReloader({ docker, where, containers: [], mode: 'restart', stopTimeoutS: 5, readyTimeoutMs: 20_000, litellmUrl: 'http://127.0.0.1:1', log, ...o });
}

function name(suffix: string): string {
  return `kp-test-${standIns.runId}-${suffix}`;
}

/** Every phase change with the time it was told. */
function recorder(): RolloutProgress & { events: Array<{ target: string; phase: TargetPhase; at: number; outageMs?: number }>; planned: string[] } {
  const events: Array<{ target: string; phase: TargetPhase; at: number; outageMs?: number }> = [];
  const planned: string[] = [];
  return {
    events,
    planned,
    plan: (t) => planned.push(...t),
    phase: (target, phase, detail) => events.push({ target, phase, at: Date.now(), outageMs: detail?.outageMs }),
  };
}

const phasesOf = (events: Array<{ target: string; phase: TargetPhase }>, target: string): TargetPhase[] => events.filter((e) => e.target === target).map((e) => e.phase);
const firstAt = (events: Array<{ target: string; phase: TargetPhase; at: number }>, target: string, phase: TargetPhase): number => {
  const e = events.find((x) => x.target === target && x.phase === phase);
  if (!e) throw new Error(`${target} never reached ${phase}`);
  return e.at;
};

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

describe('settle()', () => {
  it('returns once the check has passed for the settle time without a failure, starting over after one', async () => {
    let failUntil = Date.now() + 300;
    const seen: string[] = [];
    const started = Date.now();
    let lastFailureAt = 0;
    await settle({
      settleMs: 400,
      timeoutMs: 5_000,
      intervalMs: 20,
      check: async () => {
        if (Date.now() < failUntil) {
          lastFailureAt = Date.now();
          return 'HTTP 503';
        }
        return undefined;
      },
      onUnready: (s) => seen.push(s),
    });
    // The first failure starts it over; the settle then needs 400 ms of passes after the last failure.
    expect(seen).toEqual(['HTTP 503']);
    expect(Date.now() - lastFailureAt).toBeGreaterThanOrEqual(400);
    expect(Date.now() - started).toBeGreaterThanOrEqual(700);

    failUntil = Number.POSITIVE_INFINITY;
    await expect(settle({ settleMs: 200, timeoutMs: 300, intervalMs: 20, check: async () => (Date.now() < failUntil ? 'HTTP 503' : undefined) })).rejects.toThrow(
      /did not stay ready for 200 ms within 300 ms \(last failed check: HTTP 503\)/,
    );
  });
});

describe('docker reloader: readiness, not liveliness', () => {
  it('waits for /health/readiness while /health/liveliness already answers, and fails when readiness never comes', async () => {
    const dir = tempDir();
    const files = await RevisionFiles.create(dir);
    const port = await freePort();
    await files.write(1, { OPENROUTER_API_KEY: 'sk-or-ready-0000001' });
    // Alive at once, ready 2 s later: as LiteLLM is while it connects its database.
    await standIns.run({ name: name('ready'), port, outDir: dir, cmd: READS_ENV_FILE, env: { STANDIN_READY_DELAY: '2' } });
    await eventually(async () => ((await checkReadiness(standIns.url(port))) === undefined ? true : undefined), 10_000, 'first readiness');

    const progress = recorder();
    const req = { ...(await files.write(2, { OPENROUTER_API_KEY: 'sk-or-ready-0000002' })), progress };
    const pending = reloader({ containers: [name('ready')] }).reload(req);
    // While keyplane waits, the stand-in is seen alive but not ready: liveliness would have ended the wait.
    const aliveNotReady = await eventually(
      async () => {
        const [live, ready] = await Promise.all([checkLiveliness(standIns.url(port), 500), checkReadiness(standIns.url(port), 500)]);
        return live === undefined && ready !== undefined ? true : undefined;
      },
      15_000,
      'alive but not yet ready',
    );
    expect(aliveNotReady).toBe(true);
    expect(progress.events.some((e) => e.phase === 'done')).toBe(false);
    const result = await pending;
    expect(result.status).toBe('ok');
    expect(await checkReadiness(standIns.url(port))).toBeUndefined();
    expect((await standIns.servedEnv(port)).OPENROUTER_API_KEY).toBe('sk-or-ready-0000002');
    expect(phasesOf(progress.events, name('ready'))).toEqual(['stopping', 'waiting-ready', 'done']);
    // The outage spans the readiness delay: from the stop until ready, not until alive.
    expect(result.targets[0]!.outageMs).toBeGreaterThanOrEqual(2_000);

    // Alive but never ready: the reload fails (and is rolled back), although liveliness answers.
    const stuck = name('never');
    const port2 = await freePort();
    await standIns.run({ name: stuck, port: port2, outDir: dir, cmd: READS_ENV_FILE, env: { STANDIN_READY_DELAY: '100000' } });
    const bad = await reloader({ containers: [stuck], readyTimeoutMs: 2_000 }).reload(await files.write(3, { OPENROUTER_API_KEY: 'sk-or-ready-0000003' }));
    expect(bad.status).toBe('failed');
    expect(bad.error).toMatch(/\/health\/readiness did not answer within 2000 ms \(last: HTTP 404\)/);
  });
});

describe('docker reloader: rolling across targets', () => {
  it('stops the next target only after the one before has stayed ready for the settle time, and reports phases and outages', async () => {
    const dir = tempDir();
    const files = await RevisionFiles.create(dir);
    await files.write(1, { OPENROUTER_API_KEY: 'sk-or-roll-0000001' });
    const ports = [await freePort(), await freePort()];
    const names = [name('a'), name('b')];
    for (const [i, n] of names.entries()) await standIns.run({ name: n, port: ports[i]!, outDir: dir, cmd: READS_ENV_FILE, env: { STANDIN_DELAY: '1' } });

    const events = new SafeEmitter<ReloadEvents>();
    const registry = new client.Registry();
    const alerter: Alerter = { send: async (_e: AlertEvent) => undefined };
    const settleMs = 1_500;
    const queue = new ReloadQueue({ reloader: reloader({ containers: names, settleMs, settleIntervalMs: 100 }), pool: db.pool, log, alerter, emitter: events, registry });
    const phases: Array<{ target: string; phase: TargetPhase; at: number }> = [];
    events.on('reload:phase', (e) => phases.push({ target: e.target, phase: e.phase, at: Date.now() }));
    const done = new Promise<ReloadEvents['reload:done']>((resolve) => events.once('reload:done', resolve));

    queue.submit(await files.write(2, { OPENROUTER_API_KEY: 'sk-or-roll-0000002' }));
    // While it runs, the sync status shows every target's phase.
    const seen = await eventually(
      async () => {
        const s = await queue.status();
        const a = s.running?.targets.find((t) => t.target === names[0]);
        const b = s.running?.targets.find((t) => t.target === names[1]);
        return a?.phase === 'settling' && b?.phase === 'pending' ? s.running : undefined;
      },
      30_000,
      'a settling while b waits',
    );
    expect(seen!.targets.map((t) => t.target)).toEqual(names);
    expect(seen!.targets[0]!.outage_ms).toBeGreaterThanOrEqual(1_000);

    const { result } = await done;
    expect(result.status).toBe('ok');
    for (const p of ports) expect((await standIns.servedEnv(p)).OPENROUTER_API_KEY).toBe('sk-or-roll-0000002');
    expect(phasesOf(phases, names[0]!)).toEqual(['stopping', 'waiting-ready', 'settling', 'done']);
    expect(phasesOf(phases, names[1]!)).toEqual(['stopping', 'waiting-ready', 'settling', 'done']);
    // The second stop comes no sooner than the settle time after the first was ready.
    expect(firstAt(phases, names[1]!, 'stopping') - firstAt(phases, names[0]!, 'settling')).toBeGreaterThanOrEqual(settleMs);

    // The run is recorded with each target's outage (the stand-in starts 1 s after its stop), and measured.
    const last = (await queue.status()).last!;
    expect(last.targets.map((t) => t.target)).toEqual(names);
    for (const t of last.targets) expect(t.outage_ms).toBeGreaterThanOrEqual(1_000);
    const exposition = await registry.metrics();
    expect(exposition).toContain(`keyplane_reload_outage_seconds_count{target="${names[0]}"} 1`);
    expect(exposition).toContain(`keyplane_reload_outage_seconds_count{target="${names[1]}"} 1`);
    await queue.stop();
  });

  it('does not settle a lone target', async () => {
    const dir = tempDir();
    const files = await RevisionFiles.create(dir);
    await files.write(1, { OPENROUTER_API_KEY: 'sk-or-lone-0000001' });
    const port = await freePort();
    await standIns.run({ name: name('lone'), port, outDir: dir, cmd: READS_ENV_FILE });
    const progress = recorder();
    const result = await reloader({ containers: [name('lone')], settleMs: 60_000 }).reload({ ...(await files.write(2, { OPENROUTER_API_KEY: 'sk-or-lone-0000002' })), progress });
    expect(result.status).toBe('ok');
    expect(phasesOf(progress.events, name('lone'))).toEqual(['stopping', 'waiting-ready', 'done']);
  });
});

describe('command reloader: one run per target', () => {
  it('runs the command per target in order, waits for each to be ready and settled, and starts the settle over when one flaps', async () => {
    const dir = tempDir();
    const files = await RevisionFiles.create(dir);
    const servers = [await startLivelinessServer(), await startLivelinessServer()];
    const logFile = path.join(dir, 'targets.log');
    try {
      const targets = [
        { name: 'litellm@4001.service', url: servers[0]!.url },
        { name: 'litellm@4002.service', url: servers[1]!.url },
      ];
      const settleMs = 800;
      const r = new CommandReloader({
        command: `printf '%s %s\\n' "$KEYPLANE_TARGET" "$KEYPLANE_TARGET_URL" >> ${logFile}`,
        timeoutMs: 5_000,
        targets,
        readyTimeoutMs: 10_000,
        settleMs,
        settleIntervalMs: 50,
        log,
      });
      const progress = recorder();
      // The first target stops being ready once while it settles: its settle starts over.
      let flapped = 0;
      const flap = setInterval(() => {
        if (progress.events.some((e) => e.target === targets[0]!.name && e.phase === 'settling') && flapped === 0) {
          flapped = Date.now();
          servers[0]!.ready = false;
          setTimeout(() => (servers[0]!.ready = true), 300);
        }
      }, 10);
      let result;
      try {
        result = await r.reload({ ...(await files.write(1, { OPENROUTER_API_KEY: 'sk-or-cmd-0000001' })), progress });
      } finally {
        clearInterval(flap);
      }
      expect(result.status).toBe('ok');
      expect(readFileSync(logFile, 'utf8')).toBe(targets.map((t) => `${t.name} ${t.url}\n`).join(''));
      expect(flapped).toBeGreaterThan(0);
      // The second command ran only after a full settle that began after the flap ended.
      expect(firstAt(progress.events, targets[1]!.name, 'stopping') - (flapped + 300)).toBeGreaterThanOrEqual(settleMs);
      expect(result.targets.map((t) => [t.target, t.status])).toEqual(targets.map((t) => [t.name, 'ok']));
      for (const t of result.targets) expect(t.outageMs).toBeGreaterThanOrEqual(0);

      // A target that never stays ready fails the reload, and the next is not touched.
      servers[0]!.ready = false;
      const flapping = setInterval(() => (servers[0]!.ready = !servers[0]!.ready), 60);
      let bad;
      try {
        bad = await new CommandReloader({ command: `printf '%s\\n' "$KEYPLANE_TARGET" >> ${logFile}.2`, timeoutMs: 5_000, targets, readyTimeoutMs: 1_500, settleMs: 1_000, settleIntervalMs: 20, log }).reload(
          await files.write(2, { OPENROUTER_API_KEY: 'sk-or-cmd-0000002' }),
        );
      } finally {
        clearInterval(flapping);
      }
      expect(bad.status).toBe('failed');
      expect(bad.error).toMatch(/^litellm@4001\.service: LiteLLM was ready but did not stay ready: did not stay ready for 1000 ms within 1500 ms/);
      expect(bad.targets.map((t) => t.status)).toEqual(['failed', 'skipped']);
      expect(readFileSync(`${logFile}.2`, 'utf8')).toBe('litellm@4001.service\n');
    } finally {
      for (const s of servers) await s.close();
    }
  });
});
