import { execFile } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import type Docker from 'dockerode';
import { loadSettings } from '../src/config';
import { Keyring } from '../src/crypto/keyring';
import { migrate, SQL_DIR } from '../src/db/migrator';
import { doctor } from '../src/doctor';
import { startTestApp } from './helpers/app';
import { createEmptyDatabase, createTestDatabase, type TestDatabase } from './helpers/db';
import { connectDocker, ensureStandInImage, StandIns } from './helpers/docker';
import { FakeLitellm } from './helpers/fake-litellm';
import { closedPort } from './helpers/fake-provider';
import { freePort, startLivelinessServer } from './helpers/reload';

const run = promisify(execFile);
jest.setTimeout(120_000);
const BIN = path.resolve(__dirname, '..', 'bin', 'keyplane.js');

const KEY = Keyring.generateSpec('t1');
const LITELLM_KEY = 'sk-litellm-doctor-master-0001';
const dirs: string[] = [];
const tempDir = (): string => {
  const d = mkdtempSync(path.join(os.tmpdir(), 'keyplane-doctor-'));
  dirs.push(d);
  return d;
};

let db: TestDatabase;
let outDir: string;

/** Runs doctor in process on `db` (unless the env names another database); returns its exit code and lines. */
async function diagnose(env: Record<string, string> = {}): Promise<{ code: number; lines: string[]; text: string }> {
  const lines: string[] = [];
  const settings = loadSettings({ KEYPLANE_DATABASE_URL: db.url, KEYPLANE_MASTER_KEY: KEY, KEYPLANE_DATA_DIR: tempDir(), KEYPLANE_OUTPUT_DIR: outDir, ...env });
  const code = await doctor(settings, (l) => lines.push(l));
  for (const l of lines.slice(0, -1)) expect(l).toMatch(/^(OK {3}[a-z ]+: .+|FAIL [a-z ]+: .+; fix: .+)$/);
  return { code, lines, text: lines.join('\n') };
}

const line = (r: { lines: string[] }, check: string): string | undefined => r.lines.find((l) => l.slice(5).startsWith(`${check}: `));

/** What the database holds that doctor could be tempted to change: migrations, secrets, sync and LiteLLM state. */
async function dbSnapshot(d: TestDatabase): Promise<string> {
  const parts: unknown[] = [];
  for (const q of [
    "SELECT to_regclass('keyplane_migrations')::text AS t",
    'SELECT id, name, checksum FROM keyplane_migrations ORDER BY id',
    'SELECT name, jwe, kid FROM keyplane_secrets ORDER BY name',
    'SELECT name, version, kid, jwe FROM platform_key_versions ORDER BY name, version',
    'SELECT * FROM sync_state',
    'SELECT * FROM litellm_api_state',
  ]) {
    parts.push(await d.pool.query(q).then((r) => r.rows, (e: Error) => e.message));
  }
  return JSON.stringify(parts);
}

beforeAll(async () => {
  db = await createTestDatabase();
  const t = await startTestApp({ db, masterKey: KEY });
  await t.api().put('/api/v1/admin/platform-keys/openai').send({ api_key: 'sk-doctor-test-openai-aaaa' }).expect(200);
  await t.api().put('/api/v1/admin/platform-keys/litellm_master_key').send({ api_key: LITELLM_KEY }).expect(200);
  await t.close();
  outDir = tempDir();
});
afterAll(async () => {
  await db.drop();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describe('keyplane doctor: one line per check, OK or FAIL with the fix; exit 1 on any FAIL', () => {
  it('all OK', async () => {
    const r = await diagnose();
    expect(r.code).toBe(0);
    expect(r.lines).toEqual([
      expect.stringMatching(/^OK   master key: KEYPLANE_MASTER_KEY: t1 \(sha256:[0-9a-f]{8}\)$/),
      expect.stringMatching(/^OK   database: postgres:\/\/.*; PostgreSQL \d+/),
      expect.stringMatching(/^OK   migrations: all \d+ applied \(latest \d{3}_[\w-]+\.sql\)$/),
      'OK   secrets: all 3 secret(s) decrypt (3 under t1)',
      `OK   output dir: ${outDir} is writable`,
      'OK   reload: KEYPLANE_RELOAD=none: LiteLLM is not reloaded; it reads the files when it next starts',
      'all checks passed',
    ]);
  });

  it('master key: FAIL without one; the secrets are then not checked', async () => {
    const r = await diagnose({ KEYPLANE_MASTER_KEY: '' });
    expect(r.code).toBe(1);
    expect(line(r, 'master key')).toBe(
      'FAIL master key: KEYPLANE_MASTER_KEY: is required with KEYPLANE_DATABASE_URL (generate one with `keyplane master-key generate`); fix: set KEYPLANE_MASTER_KEY_FILE to the key file (keyplane master-key generate makes a key)',
    );
    expect(line(r, 'secrets')).toBe('FAIL secrets: not checked (no master key); fix: fix that first');
    expect(r.lines[r.lines.length - 1]).toBe('2 check(s) failed');
  });

  it('database: FAIL when it cannot be reached; what needs it is not checked', async () => {
    const r = await diagnose({ KEYPLANE_DATABASE_URL: `postgres://keyplane:pw@127.0.0.1:${await closedPort()}/keyplane` });
    expect(r.code).toBe(1);
    expect(line(r, 'database')).toMatch(/^FAIL database: .*ECONNREFUSED.*; fix: check KEYPLANE_DATABASE_URL and that its Postgres runs$/);
    expect(line(r, 'migrations')).toBe('FAIL migrations: not checked (no database); fix: fix that first');
    expect(line(r, 'secrets')).toBe('FAIL secrets: not checked (no database); fix: fix that first');
    expect(r.text).not.toContain(':pw@');
  });

  it('migrations: FAIL when some are pending, or none applied; doctor applies none', async () => {
    const empty = await createEmptyDatabase();
    try {
      const none = await diagnose({ KEYPLANE_DATABASE_URL: empty.url });
      expect(line(none, 'migrations')).toMatch(/^FAIL migrations: the database has no keyplane tables yet \(\d+ migrations pending\); fix: keyplane migrate, or start keyplane serve, which applies them$/);
      expect(line(none, 'secrets')).toBe('FAIL secrets: not checked (the keyplane tables are not all there); fix: fix that first');
      expect((await empty.pool.query("SELECT to_regclass('keyplane_migrations') AS t")).rows[0].t).toBeNull();

      const some = tempDir();
      const all = readdirSync(SQL_DIR).filter((f) => f.endsWith('.sql')).sort();
      for (const f of all.slice(0, 3)) copyFileSync(path.join(SQL_DIR, f), path.join(some, f));
      await migrate(empty.pool, some);
      const before = await dbSnapshot(empty);
      const pending = await diagnose({ KEYPLANE_DATABASE_URL: empty.url });
      expect(pending.code).toBe(1);
      expect(line(pending, 'migrations')).toBe(`FAIL migrations: ${all.length - 3} pending: ${all.slice(3).join(', ')}; fix: keyplane migrate (keyplane serve also applies them when it starts)`);
      expect(await dbSnapshot(empty)).toBe(before);
    } finally {
      await empty.drop();
    }
  });

  it('secrets: FAIL naming the missing key id, or the secrets a same-id key does not decrypt', async () => {
    const missing = await diagnose({ KEYPLANE_MASTER_KEY: Keyring.generateSpec('other') });
    expect(line(missing, 'secrets')).toBe(
      'FAIL secrets: 3 of 3 secret(s) do not decrypt: they need master key id(s) t1, which the keyring does not have; fix: configure the master key(s) they were encrypted with (KEYPLANE_MASTER_KEY_FILE); keyplane master-key move and rotate change keys',
    );
    const wrong = await diagnose({ KEYPLANE_MASTER_KEY: Keyring.generateSpec('t1') });
    expect(line(wrong, 'secrets')).toMatch(/^FAIL secrets: 3 of 3 secret\(s\) do not decrypt: this master key does not decrypt (keyplane\/fingerprint_key|platform_key\/openai\/v1|platform_key\/litellm_master_key\/v1) \(key t1\), .*; fix: /);
    expect(wrong.code).toBe(1);
  });

  it('output dir: OK when it can be created (it is not), FAIL when it cannot', async () => {
    const parent = tempDir();
    const later = path.join(parent, 'a', 'litellm');
    const ok = await diagnose({ KEYPLANE_OUTPUT_DIR: later });
    expect(line(ok, 'output dir')).toBe(`OK   output dir: ${later} does not exist yet; keyplane creates it (${parent} is writable)`);
    expect(existsSync(path.join(parent, 'a'))).toBe(false);
    const file = path.join(parent, 'file');
    writeFileSync(file, 'x');
    const notDir = await diagnose({ KEYPLANE_OUTPUT_DIR: file });
    expect(line(notDir, 'output dir')).toBe(`FAIL output dir: ${file} is not a directory; fix: remove it, or set KEYPLANE_OUTPUT_DIR to a directory`);
    const under = await diagnose({ KEYPLANE_OUTPUT_DIR: path.join(file, 'litellm') });
    expect(line(under, 'output dir')).toBe(`FAIL output dir: ${path.join(file, 'litellm')} cannot be created: ${file} is not a directory; fix: set KEYPLANE_OUTPUT_DIR to a directory path`);
    expect(under.code).toBe(1);
  });

  it('base config: OK when it parses, FAIL when it does not', async () => {
    const d = tempDir();
    writeFileSync(path.join(d, 'good.yaml'), 'litellm_settings:\n  drop_params: true\n');
    writeFileSync(path.join(d, 'bad.yaml'), 'litellm_settings: [\n');
    expect(line(await diagnose({ KEYPLANE_BASE_CONFIG: path.join(d, 'good.yaml') }), 'base config')).toBe(`OK   base config: ${path.join(d, 'good.yaml')}: 1 top-level key(s)`);
    expect(line(await diagnose({ KEYPLANE_BASE_CONFIG: path.join(d, 'bad.yaml') }), 'base config')).toMatch(/^FAIL base config: .*bad\.yaml.*; fix: fix the file, or unset KEYPLANE_BASE_CONFIG$/);
  });

  it('reload command: the program and LiteLLM\'s liveliness, OK and FAIL', async () => {
    const live = await startLivelinessServer();
    try {
      const ok = await diagnose({ KEYPLANE_RELOAD: 'command', KEYPLANE_RELOAD_COMMAND: `${process.execPath} --version`, KEYPLANE_LITELLM_URL: live.url });
      expect(line(ok, 'reload command')).toBe(`OK   reload command: ${process.execPath} is ${process.execPath}`);
      expect(line(ok, 'litellm')).toBe(`OK   litellm: ${live.url} is live`);
      expect(ok.code).toBe(0);
      const inPath = await diagnose({ KEYPLANE_RELOAD: 'command', KEYPLANE_RELOAD_COMMAND: 'LC_ALL=C sh -c true', KEYPLANE_LITELLM_URL: live.url });
      expect(line(inPath, 'reload command')).toMatch(/^OK   reload command: sh is \/.*\/sh$/);
    } finally {
      await live.close();
    }
    const port = await closedPort();
    const bad = await diagnose({ KEYPLANE_RELOAD: 'command', KEYPLANE_RELOAD_COMMAND: 'no-such-program-kp restart litellm', KEYPLANE_LITELLM_URL: `http://127.0.0.1:${port}` });
    expect(line(bad, 'reload command')).toMatch(/^FAIL reload command: no-such-program-kp is not in PATH \(.*\); fix: install it, or give its full path in KEYPLANE_RELOAD_COMMAND$/);
    expect(line(bad, 'litellm')).toBe(`FAIL litellm: http://127.0.0.1:${port}/health/liveliness: ECONNREFUSED; fix: start LiteLLM, or set KEYPLANE_LITELLM_URL to where it answers`);
    expect(bad.code).toBe(1);
  });

  describe('reload docker', () => {
    let docker: Docker;
    let where: string;
    let standIns: StandIns;
    beforeAll(async () => {
      ({ docker, where } = await connectDocker());
      await ensureStandInImage(docker);
      standIns = new StandIns(docker);
    });
    afterAll(async () => standIns?.removeAll());

    it('engine, targets (by name and by label) and their liveliness: OK', async () => {
      const name = `kp-doctor-${standIns.runId}`;
      const port = await freePort();
      await standIns.run({ name, port, outDir: tempDir(), labels: { 'keyplane.doctor': standIns.runId } });
      const byName = await diagnose({ KEYPLANE_RELOAD: 'docker', KEYPLANE_DOCKER_CONTAINERS: name, DOCKER_HOST: where });
      expect(line(byName, 'docker engine')).toMatch(/^OK   docker engine: unix:\/\/.* answers \(Docker [\d.]+/);
      expect(line(byName, 'docker targets')).toBe(`OK   docker targets: 1 running: ${name}`);
      expect(line(byName, 'litellm')).toBe(`OK   litellm: http://127.0.0.1:${port} is live`);
      expect(byName.code).toBe(0);
      const byLabel = await diagnose({ KEYPLANE_RELOAD: 'docker', KEYPLANE_DOCKER_LABEL: `keyplane.doctor=${standIns.runId}`, DOCKER_HOST: where });
      expect(line(byLabel, 'docker targets')).toBe(`OK   docker targets: 1 running: ${name}`);
    });

    it('FAIL: no engine, no such container, no container with the label', async () => {
      const noEngine = await diagnose({ KEYPLANE_RELOAD: 'docker', KEYPLANE_DOCKER_CONTAINERS: 'litellm', DOCKER_HOST: 'unix:///nonexistent/docker.sock' });
      expect(line(noEngine, 'docker engine')).toBe(
        "FAIL docker engine: cannot reach the Docker engine at unix:///nonexistent/docker.sock (ENOENT); fix: start Docker, mount its socket into keyplane's container, or set DOCKER_HOST",
      );
      expect(line(noEngine, 'docker targets')).toBeUndefined();
      const noName = await diagnose({ KEYPLANE_RELOAD: 'docker', KEYPLANE_DOCKER_CONTAINERS: 'kp-doctor-none', DOCKER_HOST: where });
      expect(line(noName, 'docker targets')).toBe(
        "FAIL docker targets: no container named kp-doctor-none (KEYPLANE_DOCKER_CONTAINERS); fix: create and start LiteLLM's container(s), or correct KEYPLANE_DOCKER_CONTAINERS",
      );
      const noLabel = await diagnose({ KEYPLANE_RELOAD: 'docker', KEYPLANE_DOCKER_LABEL: 'keyplane.doctor=none', DOCKER_HOST: where });
      expect(line(noLabel, 'docker targets')).toBe(
        "FAIL docker targets: no running container has the label keyplane.doctor=none (KEYPLANE_DOCKER_LABEL); fix: label LiteLLM's container(s) with it and start them, or set KEYPLANE_DOCKER_CONTAINERS",
      );
      expect(noLabel.code).toBe(1);
    });
  });

  it('reload litellm-api: liveliness and the master key (set, or stored), OK and FAIL; nothing recorded', async () => {
    const fake = await FakeLitellm.start({ masterKey: LITELLM_KEY });
    try {
      const before = await dbSnapshot(db);
      const set = await diagnose({ KEYPLANE_RELOAD: 'litellm-api', KEYPLANE_LITELLM_URL: fake.url, KEYPLANE_LITELLM_MASTER_KEY: LITELLM_KEY });
      expect(line(set, 'litellm')).toBe(`OK   litellm: ${fake.url} is live`);
      expect(line(set, 'litellm master key')).toBe(`OK   litellm master key: LiteLLM at ${fake.url} accepts KEYPLANE_LITELLM_MASTER_KEY`);
      const stored = await diagnose({ KEYPLANE_RELOAD: 'litellm-api', KEYPLANE_LITELLM_URL: fake.url });
      expect(line(stored, 'litellm master key')).toBe(`OK   litellm master key: LiteLLM at ${fake.url} accepts the stored litellm_master_key (version 1)`);
      expect(stored.code).toBe(0);
      const refused = await diagnose({ KEYPLANE_RELOAD: 'litellm-api', KEYPLANE_LITELLM_URL: fake.url, KEYPLANE_LITELLM_MASTER_KEY: 'sk-litellm-wrong-key-9999' });
      expect(line(refused, 'litellm master key')).toBe(
        `FAIL litellm master key: LiteLLM at ${fake.url} refused KEYPLANE_LITELLM_MASTER_KEY; fix: set KEYPLANE_LITELLM_MASTER_KEY to the key LiteLLM runs with, or restart LiteLLM with the stored litellm_master_key`,
      );
      expect(refused.text).not.toContain('9999');
      expect(refused.text).not.toContain(LITELLM_KEY);
      // The reloader would remember which master key version LiteLLM took; doctor records nothing.
      expect(await dbSnapshot(db)).toBe(before);
    } finally {
      await fake.stop();
    }
    const down = await diagnose({ KEYPLANE_RELOAD: 'litellm-api', KEYPLANE_LITELLM_URL: `http://127.0.0.1:${await closedPort()}`, KEYPLANE_LITELLM_MASTER_KEY: LITELLM_KEY });
    expect(line(down, 'litellm')).toMatch(/^FAIL litellm: .*ECONNREFUSED; fix: /);
    expect(line(down, 'litellm master key')).toMatch(/^FAIL litellm master key: GET \/credentials: cannot reach LiteLLM at .*; fix: /);
  });
});

describe('keyplane doctor changes nothing', () => {
  /** Names, kinds, modes, sizes and times of everything under `dir`, except inside Postgres's own cluster. */
  function tree(dir: string): string[] {
    if (!existsSync(dir)) return ['(absent)'];
    const out: string[] = [];
    const walk = (d: string): void => {
      for (const name of readdirSync(d).sort()) {
        const p = path.join(d, name);
        const st = statSync(p);
        // The cluster directory is Postgres's own (it writes its pid file there while it runs).
        if (name === 'pg' && d === dir) {
          out.push(`pg ${st.mode.toString(8)} ${st.uid}`);
          continue;
        }
        out.push(`${path.relative(dir, p)} ${st.mode.toString(8)} ${st.isDirectory() ? '-' : st.size} ${st.mtimeMs}`);
        if (st.isDirectory()) walk(p);
      }
    };
    walk(dir);
    return out;
  }

  it('on a data dir with nothing in it: no master key made, no cluster, no output dir', async () => {
    const dataDir = tempDir();
    const res = await run(process.execPath, [BIN, 'doctor'], { env: { PATH: process.env.PATH!, KEYPLANE_DATA_DIR: dataDir } }).catch((e: { code: number; stdout: string }) => e);
    expect(res).toMatchObject({ code: 1 });
    const stdout = (res as { stdout: string }).stdout;
    expect(stdout).toContain(`FAIL master key: KEYPLANE_MASTER_KEY: is not set, and there is no development key ${dataDir}/master.key yet; fix: `);
    expect(stdout).toContain(`FAIL database: there is no embedded Postgres cluster in ${dataDir}/pg yet; fix: start keyplane once (keyplane serve), which creates it; or set KEYPLANE_DATABASE_URL`);
    expect(stdout).toContain(`OK   output dir: ${dataDir}/litellm does not exist yet; keyplane creates it (${dataDir} is writable)`);
    expect(readdirSync(dataDir)).toEqual([]);
  });

  it('on an embedded data dir (its cluster started for the checks and stopped): data dir and output dir unchanged', async () => {
    const dataDir = tempDir();
    const env = { PATH: process.env.PATH!, KEYPLANE_DATA_DIR: dataDir };
    await run(process.execPath, [BIN, 'migrate'], { env });
    mkdirSync(path.join(dataDir, 'litellm'));
    const before = tree(dataDir);
    const res = await run(process.execPath, [BIN, 'doctor'], { env });
    expect(res.stdout).toMatch(new RegExp(`^OK   database: the embedded Postgres in ${dataDir}/pg \\(started for these checks, stopped after\\); PostgreSQL \\d+`, 'm'));
    expect(res.stdout).toMatch(/^all checks passed$/m);
    expect(tree(dataDir)).toEqual(before);
    expect(existsSync(path.join(dataDir, 'pg', 'postmaster.pid'))).toBe(false);
  });
});
