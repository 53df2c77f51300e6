import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { loadSettings } from '../../src/config';
import { waitForReadiness } from '../../src/reload/liveliness';
import { connectDocker, ensureStandInImage, StandIns, STANDIN_IMAGE } from '../helpers/docker';
import { DRAINING_STANDIN_CMD } from '../helpers/draining-standin';
import { startFakeProvider, type FakeProvider } from '../helpers/fake-provider';
import { startHaproxy, type Haproxy } from '../helpers/haproxy';
import { LoadClient } from '../helpers/load-client';
import { freePort } from '../helpers/reload';
import { reloadWiring } from '../helpers/reload-app';
import { startBenchKeyplane, type BenchEnv } from './bench-env';

/**
 * `npm run bench:drill`: the project's goal, end to end. "A key leaks; one call replaces it,
 * validated, served by every LiteLLM replica, the old key gone from every file, no client request
 * failed, in under 60 s."
 *
 * Two LiteLLM stand-ins (restart mode: they read litellm.env at every start, drain on SIGTERM, and
 * answer only STANDIN_DELAY seconds after a start, as LiteLLM's cold start) behind Debian's haproxy
 * with compose/haproxy.cfg; keyplane in this process with KEYPLANE_RELOAD=docker and its default
 * settle; a provider whose api_base is a fake provider on loopback that accepts the new key (the
 * validation probe); a client sending requests through haproxy without pause. Per drill, ONE call,
 * `POST /api/v1/admin/providers/drill/rotate {"api_key", "grace"}`, and from that call:
 *   answered   the 202 (the new key validated with the provider and added beside the old one)
 *   served     every replica's /env holds the new key's variable with the new value (the stand-ins
 *              do not call providers: what a replica started with is what it serves)
 *   done       the rotation's status is `done` (its `removed` step)
 *   files      the old value is out of litellm.env, and its os.environ/<VAR> out of config.yaml (the
 *              value itself is never in config.yaml)
 *   replicas   no replica's /env holds the old value any more (every one answering)
 *   over       the reload that removed it is over (the last replica's settle included)
 * and the client's failed requests from the call to `over`. Each phase of the two rollouts (the
 * first adds the new key, the second removes the old one) is taken from keyplane's own events.
 *
 * BENCH_DRILLS (3), BENCH_STANDIN_DELAYS (seconds, one run each: "9,2"; 9 s is the real LiteLLM's
 * cold start on these machines), BENCH_GRACE ("0s"), BENCH_ROLLOUT_SETTLE (unset: keyplane's default).
 */
const DRILLS = Number(process.env.BENCH_DRILLS ?? 3);
const DELAYS = (process.env.BENCH_STANDIN_DELAYS ?? '9,2').split(',').map((d) => d.trim());
const GRACE = process.env.BENCH_GRACE ?? '0s';
const SETTLE = process.env.BENCH_ROLLOUT_SETTLE;
const GOAL_MS = 60_000;
const POLL_MS = 20;
const SLUG = 'drill';
let interrupted = false;
const MODEL = 'drill-mini';

const MILESTONES = ['answered', 'served', 'done', 'files', 'replicas', 'over'] as const;
type Milestone = (typeof MILESTONES)[number];
const LABELS: Record<Milestone, string> = {
  answered: 'call answered (validated, added)',
  served: 'new key served by every replica',
  done: 'rotation status done',
  files: 'old key out of litellm.env + config.yaml',
  replicas: 'old key out of every replica',
  over: 'second reload over',
};

/** One rollout as keyplane's events tell it, in ms from the call. */
interface Rollout {
  revision: number;
  startedMs: number;
  doneMs: number;
  /** Per replica, in rollout order: restart called, ready, settled. */
  targets: Array<{ target: string; stoppingMs: number; readyMs: number; doneMs: number }>;
}

interface Drill {
  delay: string;
  drill: number;
  ms: Record<Milestone, number>;
  rollouts: Rollout[];
  /** The worker's `removed` step, and the call's own steps, in ms from the call. */
  removedMs: number;
  failed: number;
  sent: number;
}

interface Keyed {
  name: string;
  envVar: string;
  value: string;
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};
const sec = (ms: number): string => (ms / 1000).toFixed(1);
const medMax = (xs: number[]): string => `${sec(median(xs))} / ${sec(Math.max(...xs))}`;

async function env(url: string): Promise<string | undefined> {
  try {
    const res = await fetch(`${url}/env`, { signal: AbortSignal.timeout(1_000) });
    return res.ok ? await res.text() : undefined;
  } catch {
    return undefined;
  }
}

/** `VAR=value` is one of the lines of `text` (an env file, or a stand-in's /env). */
const hasLine = (text: string | undefined, line: string): boolean => text !== undefined && text.split('\n').includes(line);

function read(file: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}

/** Everything one run of drills needs, started in order and stopped in reverse (also when a start fails). */
class Rig {
  readonly stops: Array<() => Promise<unknown>> = [];
  private stopping: Promise<void> | undefined;
  fake!: FakeProvider;
  hp!: Haproxy;
  bench!: BenchEnv;
  client!: LoadClient;
  urls: string[] = [];
  headers: Record<string, string> = {};

  constructor(
    readonly si: StandIns,
    readonly delay: string,
    readonly dir: string,
    readonly dockerHost: string,
  ) {}

  async start(first: Keyed): Promise<void> {
    this.fake = await startFakeProvider();
    this.stops.push(() => this.fake.close());
    this.fake.acceptKeys(SLUG, [first.value]);
    const ports = [await freePort(), await freePort()];
    this.urls = ports.map((p) => this.si.url(p));
    const group = `${this.si.runId}-${this.delay}`;
    this.stops.push(() => this.si.removeAll());
    await Promise.all(
      ports.map(async (port, i) => {
        const c = await this.si.create({
          name: `kp-bench-${group}-drill-${i + 1}`,
          port,
          outDir: this.dir,
          cmd: DRAINING_STANDIN_CMD,
          env: { STANDIN_DELAY: this.delay },
          labels: { 'keyplane.bench.drill': group },
        });
        await c.start();
        await waitForReadiness(this.urls[i]!, { timeoutMs: 120_000, intervalMs: POLL_MS });
      }),
    );
    this.hp = await startHaproxy({ replicas: [`127.0.0.1:${ports[0]}`, `127.0.0.1:${ports[1]}`] });
    this.stops.push(() => this.hp.stop());
    this.bench = await startBenchKeyplane({
      KEYPLANE_OUTPUT_DIR: this.dir,
      KEYPLANE_RELOAD: 'docker',
      KEYPLANE_DOCKER_MODE: 'restart',
      KEYPLANE_DOCKER_LABEL: `keyplane.bench.drill=${group}`,
      KEYPLANE_READY_TIMEOUT: '120s',
      DOCKER_HOST: this.dockerHost,
      ...(SETTLE ? { KEYPLANE_ROLLOUT_SETTLE: SETTLE } : {}),
    });
    this.stops.push(() => this.bench.close());
    this.headers = { authorization: `Bearer ${this.bench.token}`, 'content-type': 'application/json' };
    // The provider, its first key and a model, as an admin sets them up (approving the fake's host).
    await this.api('PUT', `/api/v1/admin/platform-keys/${first.name}`, { api_key: first.value, env_var: first.envVar }, 200);
    await this.api('PUT', `/api/v1/admin/providers/${SLUG}`, { kind: 'openai', api_base: this.fake.base(SLUG), key_name: first.name }, 201);
    await this.api('POST', '/api/v1/admin/models', { model_name: MODEL, provider: SLUG, model: 'gpt-4o-mini' }, 201);
    await this.until('every replica serves the first key', async () => (await Promise.all(this.urls.map(env))).every((e) => hasLine(e, `${first.envVar}=${first.value}`)), 180_000);
    await reloadWiring(this.bench.kp).queue.whenIdle();
    this.client = new LoadClient(this.hp.url, { workers: 2, pauseAfterFailureMs: 10 });
    this.stops.push(() => this.client.stop());
  }

  /** Idempotent: a second call (Ctrl-C during the run's own cleanup) waits for the first. */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      const errors: unknown[] = [];
      for (const stop of this.stops.splice(0).reverse()) await stop().catch((err: unknown) => errors.push(err));
      if (errors.length) throw errors[0];
    })();
    return this.stopping;
  }

  async api(method: string, url: string, body: unknown, expect: number): Promise<unknown> {
    const res = await fetch(`${this.bench.kp.url!}${url}`, { method, headers: this.headers, body: body === undefined ? undefined : JSON.stringify(body) });
    const text = await res.text();
    if (res.status !== expect) throw new Error(`${method} ${url} answered ${res.status} (expected ${expect}): ${text}`);
    return text ? JSON.parse(text) : undefined;
  }

  async until(what: string, check: () => Promise<boolean>, timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!(await check())) {
      if (this.stopping) throw new Error('stopped');
      if (Date.now() > deadline) throw new Error(`delay ${this.delay} s: not ${what} within ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, POLL_MS));
    }
  }

  /** One drill: rotate `old` out for a new key with one call, and time every milestone from it. */
  async drill(n: number, old: Keyed): Promise<{ row: Drill; next: Keyed }> {
    const next: Keyed = { name: `drill-${n}`, envVar: `DRILL_${n}_API_KEY`, value: `sk-drill-${n}-${randomBytes(12).toString('hex')}` };
    this.fake.acceptKeys(SLUG, [old.value, next.value]);
    await this.hp.waitAllUp(60_000);
    const { events } = this.bench.kp;
    const client = this.client;
    const ms: Partial<Record<Milestone, number>> = {};
    const rollouts = new Map<number, Rollout>();
    let removedMs: number | undefined;
    let failedStep: string | undefined;
    let t0 = 0;
    const at = (): number => client.now() - t0;
    const offs = [
      events.on('reload:started', (e) => void (rollouts.has(e.revision) || rollouts.set(e.revision, { revision: e.revision, startedMs: at(), doneMs: NaN, targets: [] }))),
      events.on('reload:done', (e) => void (rollouts.get(e.revision)!.doneMs = at())),
      events.on('reload:failed', (e) => void (failedStep ??= `reload of revision ${e.revision} failed: ${e.result.error ?? ''}`)),
      events.on('reload:phase', (e) => {
        const r = rollouts.get(e.revision)!;
        let t = r.targets.find((x) => x.target === e.target);
        if (!t) r.targets.push((t = { target: e.target, stoppingMs: NaN, readyMs: NaN, doneMs: NaN }));
        if (e.phase === 'stopping') t.stoppingMs = at();
        if (e.phase === 'settling') t.readyMs = at();
        if (e.phase === 'done') t.doneMs = at();
      }),
      events.on('rotation:step', (e) => {
        if (e.step === 'removed') removedMs = at();
        if (e.status === 'done') ms.done ??= at();
        if (e.step === 'failed') failedStep = `rotation ${e.rotation_id} failed`;
      }),
    ];
    const envFile = path.join(this.dir, 'litellm.env');
    const configFile = path.join(this.dir, 'config.yaml');
    let watching = true;
    const watch = (async () => {
      while (watching) {
        const envs = await Promise.all(this.urls.map(env));
        const now = at();
        if (envs.every((e) => hasLine(e, `${next.envVar}=${next.value}`))) ms.served ??= now;
        if (envs.every((e) => e !== undefined && !e.includes(old.value))) ms.replicas ??= now;
        const config = read(configFile);
        if (config && !read(envFile).includes(old.value) && !config.includes(old.value) && !config.includes(`os.environ/${old.envVar}`)) ms.files ??= now;
        await new Promise((r) => setTimeout(r, POLL_MS));
      }
    })();
    try {
      t0 = client.now();
      const view = (await this.api('POST', `/api/v1/admin/providers/${SLUG}/rotate`, { api_key: next.value, replaces: old.name, grace: GRACE, name: next.name, env_var: next.envVar }, 202)) as {
        steps: Array<{ step: string }>;
      };
      ms.answered = at();
      if (view.steps.map((s) => s.step).join() !== 'validated,added') throw new Error(`the call answered with steps ${view.steps.map((s) => s.step).join()}`);
      if (!this.fake.requestsFor(SLUG).some((r) => r.key === next.value)) throw new Error('the new key was not validated with the provider');
      await this.until(
        'served, done and without the old key everywhere',
        async () => {
          if (failedStep) throw new Error(failedStep);
          return ['served', 'done', 'files', 'replicas'].every((m) => ms[m as Milestone] !== undefined);
        },
        300_000,
      );
      await reloadWiring(this.bench.kp).queue.whenIdle();
      ms.over = at();
    } finally {
      watching = false;
      await watch;
      for (const off of offs) off();
    }
    if (failedStep) throw new Error(failedStep);
    const rotation = (await this.api('GET', `/api/v1/admin/providers/${SLUG}/rotations?limit=1`, undefined, 200)) as { items: Array<{ status: string; new_key: { name: string } }> };
    if (rotation.items[0]?.status !== 'done' || rotation.items[0].new_key.name !== next.name) throw new Error(`the rotation ended ${JSON.stringify(rotation.items[0])}`);
    const ran = [...rollouts.values()].sort((a, b) => a.startedMs - b.startedMs);
    const tEnd = t0 + ms.over;
    return {
      row: {
        delay: this.delay,
        drill: n,
        ms: ms as Record<Milestone, number>,
        rollouts: ran,
        removedMs: removedMs!,
        failed: client.failures(t0, tEnd).length,
        sent: client.between(t0, tEnd).length,
      },
      next,
    };
  }
}

/** DRILLS drills in a row on one rig, each rotating out the key the one before put in. */
async function runDrills(rig: Rig): Promise<Drill[]> {
  const rows: Drill[] = [];
  let key: Keyed = { name: 'drill-0', envVar: 'DRILL_0_API_KEY', value: `sk-drill-0-${randomBytes(12).toString('hex')}` };
  await rig.start(key);
  rig.client.start();
  for (let n = 1; n <= DRILLS; n++) {
    const { row, next } = await rig.drill(n, key);
    rows.push(row);
    key = next;
    console.error(`delay ${rig.delay} s, drill ${n}: old key gone from every replica after ${sec(row.ms.replicas)} s, ${row.failed} of ${row.sent} requests failed`);
  }
  return rows;
}

/** The parts of one drill, from keyplane's events: where the time goes. */
function breakdown(d: Drill): Record<string, number> {
  const [add, remove] = d.rollouts;
  const out: Record<string, number> = {};
  if (!add || !remove || d.rollouts.length !== 2) throw new Error(`delay ${d.delay} s, drill ${d.drill}: ${d.rollouts.length} reloads, expected 2 (add, remove)`);
  out['call -> first reload starts'] = add.startedMs;
  for (const [name, r] of [['add', add], ['remove', remove]] as const) {
    r.targets.forEach((t, i) => {
      out[`${name}: replica ${i + 1} restart -> ready`] = t.readyMs - t.stoppingMs;
      out[`${name}: replica ${i + 1} settle`] = t.doneMs - t.readyMs;
    });
    out[`${name}: whole reload`] = r.doneMs - r.startedMs;
  }
  out['first reload over -> old key removed (worker)'] = d.removedMs - add.doneMs;
  out['old key removed -> second reload starts'] = remove.startedMs - d.removedMs;
  return out;
}

async function main(): Promise<void> {
  const { docker, where } = await connectDocker();
  await ensureStandInImage(docker);
  const si = new StandIns(docker);
  const root = mkdtempSync(path.join(os.tmpdir(), 'kp-bench-drill-'));
  let rig: Rig | undefined;
  // Ctrl-C: the same cleanup as the end of the run (the rig's parts in reverse, then every
  // container); the run, failing meanwhile, leaves the exit to this.
  const onSignal = (sig: NodeJS.Signals): void => {
    interrupted = true;
    void (rig?.stop() ?? Promise.resolve())
      .catch((err: unknown) => console.error(err))
      .finally(() => si.removeAll())
      .finally(() => {
        rmSync(root, { recursive: true, force: true });
        process.exit(sig === 'SIGINT' ? 130 : 143);
      });
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const rows: Drill[] = [];
  try {
    for (const delay of DELAYS) {
      const dir = path.join(root, `delay-${delay}`);
      mkdirSync(dir);
      rig = new Rig(si, delay, dir, where);
      try {
        rows.push(...(await runDrills(rig)));
      } finally {
        await rig.stop();
      }
    }
  } finally {
    await si.removeAll();
    rmSync(root, { recursive: true, force: true });
  }

  const settle = SETTLE ?? `${loadSettings({}).rolloutSettleMs / 1000}s (default)`;
  console.log(
    `bench:drill: ${DRILLS} drills per stand-in start delay; 2 stand-ins (${STANDIN_IMAGE}, restart mode, drain on SIGTERM) behind haproxy ` +
      `(compose/haproxy.cfg); KEYPLANE_RELOAD=docker, settle ${settle}; grace ${GRACE}; Docker at ${where}. Seconds from the rotate call.`,
  );
  console.table(
    rows.map((r) => ({
      'start delay s': r.delay,
      drill: r.drill,
      ...Object.fromEntries(MILESTONES.map((m) => [m, sec(r.ms[m])])),
      'failed / sent': `${r.failed} / ${r.sent}`,
    })),
  );
  for (const delay of DELAYS) {
    const rs = rows.filter((r) => r.delay === delay);
    console.log(`start delay ${delay} s: median / max, seconds from the call`);
    const table: Record<string, string> = {};
    for (const m of MILESTONES) table[LABELS[m]] = medMax(rs.map((r) => r.ms[m]));
    table['failed requests (per drill)'] = rs.map((r) => `${r.failed}/${r.sent}`).join(' ');
    const parts = rs.map(breakdown);
    for (const k of Object.keys(parts[0]!)) table[k] = medMax(parts.map((p) => p[k]!));
    console.table(table);
    const worst = Math.max(...rs.map((r) => r.ms.replicas));
    const failed = rs.reduce((a, r) => a + r.failed, 0);
    console.log(
      `goal, start delay ${delay} s: old key gone from every replica in under ${GOAL_MS / 1000} s: ${worst < GOAL_MS ? 'met' : 'NOT met'} (worst ${sec(worst)} s); ` +
        `no failed request: ${failed === 0 ? 'met' : 'NOT met'} (${failed} of ${rs.reduce((a, r) => a + r.sent, 0)})`,
    );
  }
}

main().catch((err: unknown) => {
  if (interrupted) return;
  console.error(err);
  process.exit(1);
});
