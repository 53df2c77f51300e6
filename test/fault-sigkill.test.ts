import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, watch, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { setTimeout as pause } from 'node:timers/promises';
import { loadSettings } from '../src/config';
import { Keyring, type Fingerprinter } from '../src/crypto/keyring';
import { loadFingerprinter } from '../src/crypto/secret-tables';
import { createKeyplane, type Keyplane } from '../src/main';
import { loadDesiredState } from '../src/sync/desired-state';
import { leaderAppName } from '../src/sync/leader';
import { render } from '../src/sync/renderer';
import { watcherAppName } from '../src/sync/sync-runtime';
import { isTempName } from '../src/sync/temp-files';
import { CONFIG_FILE, ENV_FILE } from '../src/sync/writer';
import { createTestDatabase, type TestDatabase } from './helpers/db';
import { KeyChurn } from './helpers/key-churn';
import { KilledFiles, sha256, type Cut, type Pair } from './helpers/killed-files';
import { requirePyYaml } from './helpers/pyyaml';
import { eventually, startLivelinessServer } from './helpers/reload';
import { liveInGroups, startServeChild, type ServeChild } from './helpers/serve-child';
import { envLine } from './helpers/sync';

/**
 * Issue 8, faults: SIGKILL during renders and reloads, 50 times while keys change. After every kill
 * the files parse and are files of recorded revisions (a pair from two revisions only as a swap cut
 * between its two renames leaves it); after the last start they are the latest state and LiteLLM
 * has been reloaded with them.
 *
 * `keyplane serve` runs as a child process with KEYPLANE_RELOAD=command; its reload command stands
 * in for LiteLLM: it hashes both files (what a restarting LiteLLM loads), takes 10-60 ms, then
 * appends `revision config-sha256 env-sha256` to a log. A kill takes keyplane and its reload
 * commands together (a container's or a systemd unit's death), so a reload cut short leaves no line.
 * Meanwhile the test process keeps changing keys, deployments and providers in the database.
 * FAULT_SIGKILL_REPORT=1 prints the timings and where the kills landed.
 */

const KILLS = 50;
const LEADS = 'this instance now leads';
const WROTE = 'rendered and wrote LiteLLM files';
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? 0;

describe('fault: SIGKILL during renders and reloads', () => {
  const masterKey = Keyring.generateSpec('kill');
  let db: TestDatabase;
  let kp: Keyplane;
  let fingerprints: Fingerprinter;
  let files: KilledFiles;
  let live: Awaited<ReturnType<typeof startLivelinessServer>>;
  let work: string;
  let out: string;
  let reloadLog: string;
  let churn: KeyChurn | undefined;
  let child: ServeChild | undefined;
  /** Every child's log output, for the secret scan. */
  const outputs: Array<{ where: string; text: string }> = [];

  beforeAll(async () => {
    requirePyYaml();
    db = await createTestDatabase();
    work = mkdtempSync(path.join(os.tmpdir(), 'kp-sigkill-'));
    out = path.join(work, 'out');
    reloadLog = path.join(work, 'reloads.log');
    live = await startLivelinessServer();
    const logStream = new PassThrough();
    logStream.resume();
    // The writer's side: the services the admin API uses, in this process, on the same database and keyring (no sync here).
    kp = await createKeyplane(
      loadSettings({ KEYPLANE_DATABASE_URL: db.url, KEYPLANE_DATA_DIR: path.join(work, 'writer'), KEYPLANE_MASTER_KEY: masterKey, KEYPLANE_LOG_LEVEL: 'warn' }),
      { listen: false, logStream },
    );
    fingerprints = await loadFingerprinter(kp.pool, kp.keyring);
    files = new KilledFiles(out, db.pool, (text) => fingerprints.of(text));
    writeFileSync(
      path.join(work, 'reload.sh'),
      [
        '# Stands in for LiteLLM: it loads both files as it restarts, is up 10-60 ms later, and only then counts as reloaded.',
        'c=$(sha256sum < "$KEYPLANE_CONFIG_PATH")',
        'e=$(sha256sum < "$KEYPLANE_ENV_PATH")',
        'n=$(od -An -N1 -tu1 /dev/urandom)',
        'sleep "0.0$((10 + $n % 50))"',
        `echo "$KEYPLANE_REVISION \${c%% *} \${e%% *}" >> '${reloadLog}'`,
        '',
      ].join('\n'),
    );
  });

  afterAll(async () => {
    if (child && !child.exited) await child.crash();
    await churn?.stop().catch(() => undefined);
    await kp?.stop();
    await live?.close();
    await db?.drop();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  function childEnv(): Record<string, string> {
    return {
      KEYPLANE_DATABASE_URL: db.url,
      KEYPLANE_DATA_DIR: path.join(work, 'data'),
      KEYPLANE_LISTEN: '127.0.0.1:0',
      KEYPLANE_MASTER_KEY: masterKey,
      KEYPLANE_OUTPUT_DIR: out,
      KEYPLANE_RELOAD: 'command',
      KEYPLANE_RELOAD_COMMAND: `exec /bin/sh '${path.join(work, 'reload.sh')}'`,
      KEYPLANE_LITELLM_URL: live.url,
      KEYPLANE_SYNC_WAIT: '0ms',
      KEYPLANE_HEALTH_SCHEDULE: 'off',
      KEYPLANE_LOG_LEVEL: 'info',
    };
  }

  async function wish(): Promise<{ wanted: number; done: number }> {
    const { rows } = await db.pool.query('SELECT reload_wanted, reload_done FROM sync_state WHERE id = 1');
    return { wanted: Number(rows[0].reload_wanted), done: Number(rows[0].reload_done) };
  }

  /** Waits until no database session of `instance` is left (Postgres has seen its sockets close; its leader lock is free). */
  async function sessionsGone(instance: string): Promise<void> {
    const names = [`keyplane:${instance}`, leaderAppName(instance), watcherAppName(instance)];
    await eventually(
      async () => ((await db.pool.query('SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1 AND application_name = ANY($2)', [db.name, names])).rows[0].n === 0 ? true : undefined),
      10_000,
      `the sessions of ${instance} to end`,
    );
  }

  /**
   * Resolves at the `n`th change of a name in `dir` that `match` accepts (inotify): the moment a
   * render stages, backs up or renames a file.
   */
  function nthChange(dir: string, n: number, match: (name: string) => boolean, timeoutMs: number): Promise<void> {
    return new Promise((resolve, reject) => {
      let seen = 0;
      const watcher = watch(dir, (_event, name) => {
        if (!match(String(name)) || ++seen < n) return;
        watcher.close();
        clearTimeout(timer);
        resolve();
      });
      const timer = setTimeout(() => {
        watcher.close();
        reject(new Error(`no ${n} changes in ${dir} within ${timeoutMs} ms`));
      }, timeoutMs);
    });
  }

  /** From spawn to leading, per instance. */
  const leadMs: number[] = [];
  /** From leading to the first files written, per instance. */
  const firstRenderMs: number[] = [];

  /**
   * Waits for a random moment to kill `c` at: during start-up, during its start render, at a step
   * of a later render, or anywhere while it renders and reloads. `last`: soon after its first render.
   */
  async function killMoment(c: ServeChild, last: boolean): Promise<void> {
    const moment = last ? 1 : Math.random();
    if (moment < 0.15) {
      // Connecting, checking migrations, preparing the output directory.
      await pause(Math.random() * (median(leadMs) || 500));
      return;
    }
    leadMs.push(await c.waitForLog(LEADS, 30_000));
    if (moment < 0.35) {
      // The start render (the one that also hands over a reload left unfinished).
      await pause(Math.random() * (median(firstRenderMs) || 500));
      return;
    }
    firstRenderMs.push((await c.waitForLog(WROTE, 30_000)) - leadMs.at(-1)!);
    if (last) await pause(Math.random() * 50);
    // Staging a file, keeping the backup, a rename: the nth change in the directory.
    else if (moment < 0.475) await nthChange(out, 1 + Math.floor(Math.random() * 12), () => true, 30_000);
    // Just after config.yaml was renamed into place, before litellm.env follows.
    else if (moment < 0.6) await nthChange(out, 1, (name) => name === CONFIG_FILE, 30_000);
    // Anywhere while it renders and reloads back to back (the churn keeps both busy).
    else await pause(Math.random() * 300);
  }

  function lastReload(): { revision: number; config: string; env: string } | undefined {
    if (!existsSync(reloadLog)) return undefined;
    const line = readFileSync(reloadLog, 'utf8').trim().split('\n').at(-1);
    if (!line) return undefined;
    const [revision, config, env] = line.split(' ');
    return { revision: Number(revision), config: config!, env: env! };
  }

  it(`keeps the files whole through ${KILLS} kills, and the last start renders and reloads the latest state`, async () => {
    const started = Date.now();
    churn = new KeyChurn(kp);
    await churn.seed();
    churn.start();

    const cuts: Record<Cut, number> = { none: 0, 'before-swap': 0, 'mid-swap': 0, done: 0 };
    let openWishes = 0;
    let reloadsCut = 0;
    let pair: Pair = { config: null, env: null };
    for (let kill = 1; kill <= KILLS; kill++) {
      if (churn.error) throw churn.error;
      if (kill === KILLS) {
        // The last kill on a state that no longer changes, soon after it is written: when it cuts
        // the reload short, the last start finds the files current and only the wish to reload open.
        await churn.stop();
        await churn.restoreAll();
      }
      const instance = `kill-${kill}-${randomBytes(3).toString('hex')}`;
      child = startServeChild(instance, childEnv());
      await killMoment(child, kill === KILLS);
      const { commandsKilled } = await child.crash();
      outputs.push({ where: instance, text: child.output() });
      child = undefined;
      if (commandsKilled) reloadsCut++;
      const w = await wish();
      if (w.wanted > w.done) openWishes++;
      await sessionsGone(instance);
      const seen = await files.afterKill(`after kill ${kill} (${instance})`, instance, pair);
      cuts[seen.cut]++;
      pair = seen.pair;
    }

    const killsDoneMs = Date.now() - started;
    const instance = `final-${randomBytes(3).toString('hex')}`;
    child = startServeChild(instance, childEnv());
    const t0 = Date.now();
    const expected = render(await loadDesiredState(kp.pool, kp.platformKeys), {}, { modelsInConfig: true });
    // Settled: the files are what the database holds now, a revision records them, and LiteLLM was reloaded with them.
    await eventually(
      async () => {
        const o = files.observe();
        const latest = (await files.revisions()).at(-1);
        const w = await wish();
        const r = lastReload();
        const settled =
          o.config?.toString('utf8') === expected.configYaml &&
          o.env?.toString('utf8') === expected.envFile &&
          latest?.config === o.pair.config &&
          latest?.env === o.pair.env &&
          w.done === w.wanted &&
          r?.env === sha256(o.env!) &&
          r?.config === sha256(o.config!);
        return settled ? true : undefined;
      },
      30_000,
      `the last start (${instance}) to render and reload the latest state`,
    ).catch((err: Error) => {
      throw new Error(`${err.message}; its log:\n${child!.output().split('\n').slice(-30).join('\n')}`);
    });
    const settleMs = Date.now() - t0;
    const finalLog = child.output();
    const finalStart = finalLog.includes('a reload wished for earlier has not finished') ? 'resumed the open wish' : finalLog.includes(WROTE) ? 'rendered new files' : 'found nothing to do';

    const config = files.read(CONFIG_FILE)!;
    const env = files.read(ENV_FILE)!;
    files.checkParses(files.observe());
    expect(config.toString('utf8')).toBe(expected.configYaml);
    expect(env.toString('utf8')).toBe(expected.envFile);
    expect(expected.deployments).toBeGreaterThanOrEqual(4);
    const latest = (await files.revisions()).at(-1)!;
    expect({ config: latest.config, env: latest.env }).toEqual({ config: sha256(config), env: fingerprints.of(env.toString('utf8')) });
    // Every key's current value, and nothing else.
    const secrets = await kp.platformKeys.currentSecrets();
    expect(secrets.length).toBeGreaterThan(0);
    for (const s of secrets) expect({ key: s.name, value: envLine(env.toString('utf8'), s.env_var) }).toEqual({ key: s.name, value: s.value });
    expect(env.toString('utf8').split('\n').filter((l) => l && !l.startsWith('#'))).toHaveLength(secrets.length);
    // LiteLLM was reloaded with exactly these files, as the latest revision, and the wish is done.
    expect(lastReload()).toEqual({ revision: latest.revision, config: sha256(config), env: sha256(env) });
    const w = await wish();
    expect(w.done).toBe(w.wanted);
    // Start-up removed what the kills left behind: temp files, and any backup of the secret file.
    expect(readdirSync(out).filter((f) => isTempName(f) || f === `${ENV_FILE}.bak`)).toEqual([]);

    await child.stop();
    outputs.push({ where: instance, text: child.output() });
    expect(liveInGroups(new Set([child.pid]))).toEqual([]);
    child = undefined;

    // No key value ever reached a log line of any of the instances.
    const leaks = churn.values.filter((v) => outputs.some((o) => o.text.includes(v)));
    expect(leaks).toEqual([]);
    // The kills did land where they should: mid-reload with reloads wished for and not finished, and across swaps.
    expect(reloadsCut).toBeGreaterThanOrEqual(10);
    expect(openWishes).toBeGreaterThanOrEqual(10);
    expect(cuts.done + cuts['before-swap'] + cuts['mid-swap']).toBeGreaterThanOrEqual(15);
    if (process.env.FAULT_SIGKILL_REPORT) {
      console.log(
        JSON.stringify({
          kills: KILLS,
          killsMs: killsDoneMs,
          totalMs: Date.now() - started,
          startToLeadMs: { min: Math.min(...leadMs), median: median(leadMs), max: Math.max(...leadMs) },
          leadToFirstRenderMs: { min: Math.min(...firstRenderMs), median: median(firstRenderMs), max: Math.max(...firstRenderMs) },
          finalSettleMs: settleMs,
          finalStart,
          cuts,
          openWishes,
          reloadsCut,
          revisions: latest.revision,
          reloads: readFileSync(reloadLog, 'utf8').trim().split('\n').length,
          churn: churn.counts,
        }),
      );
    }
  }, 180_000);
});
