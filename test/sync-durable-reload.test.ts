import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Keyring } from '../src/crypto/keyring';
import { leaderAppName } from '../src/sync/leader';
import { startTestApp, type TestApp } from './helpers/app';
import { createTestDatabase, terminateBackends, type TestDatabase } from './helpers/db';
import { eventually, freePort, startLivelinessServer } from './helpers/reload';
import { envLine, keyValue, waitForFile } from './helpers/sync';

const BIN = path.resolve(__dirname, '..', 'bin', 'keyplane.js');

/**
 * The wish to reload is durable: a render that changes the files raises it in the database before
 * the swap, a finished reload marks it done, and whoever leads next (after a crash, a stop or a lost
 * lead) reloads while it is open, even though its own render finds the files unchanged.
 */
describe('durable reload wish', () => {
  let db: TestDatabase;
  let live: Awaited<ReturnType<typeof startLivelinessServer>>;
  let work: string;
  const masterKey = Keyring.generateSpec('durable');
  const apps: TestApp[] = [];
  const children: ChildProcess[] = [];
  /** Process groups of reload commands left blocking, killed at the end. */
  const pidFiles: string[] = [];

  beforeAll(async () => {
    db = await createTestDatabase();
    live = await startLivelinessServer();
    work = mkdtempSync(path.join(os.tmpdir(), 'kp-durable-'));
  });
  afterEach(async () => {
    for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    for (const f of pidFiles.splice(0)) {
      try {
        process.kill(-Number(readFileSync(f, 'utf8').trim()), 'SIGKILL');
      } catch {
        // Already gone.
      }
    }
    for (const a of apps.splice(0).reverse()) await a.close();
  });
  afterAll(async () => {
    await live.close();
    await db.drop();
    rmSync(work, { recursive: true, force: true });
  });

  async function wish(): Promise<{ wanted: number; done: number }> {
    const { rows } = await db.pool.query('SELECT reload_wanted AS wanted, reload_done AS done FROM sync_state WHERE id = 1');
    return rows[0];
  }

  /** A reload command that notes `who` and the revision, then (when `block`) waits until killed. */
  function reloadCommand(dir: string, who: string, block: boolean): string {
    const marks = path.join(dir, 'marks');
    if (!block) return `echo "${who} $KEYPLANE_REVISION" >> ${marks}`;
    const pidFile = path.join(dir, `${who}.pid`);
    pidFiles.push(pidFile);
    return `echo $$ > ${pidFile}; echo "${who} $KEYPLANE_REVISION" >> ${marks}; while :; do sleep 0.05; done`;
  }

  const marks = (dir: string): string[] => (existsSync(path.join(dir, 'marks')) ? readFileSync(path.join(dir, 'marks'), 'utf8').trim().split('\n') : []);

  function appEnv(dir: string, instance: string, command: string): Record<string, string> {
    return {
      KEYPLANE_OUTPUT_DIR: path.join(dir, 'out'),
      KEYPLANE_RELOAD: 'command',
      KEYPLANE_RELOAD_COMMAND: command,
      KEYPLANE_LITELLM_URL: live.url,
      KEYPLANE_INSTANCE_ID: instance,
    };
  }

  it('SIGKILL during a reload: the next instance on the same database reloads the current files', async () => {
    const dir = path.join(work, 'kill');
    mkdirSync(dir);
    const port = await freePort();
    const token = 'adm_' + randomBytes(16).toString('hex');
    const child = spawn(process.execPath, [BIN, 'serve'], {
      env: {
        PATH: process.env.PATH!,
        KEYPLANE_DATABASE_URL: db.url,
        KEYPLANE_DATA_DIR: path.join(dir, 'data-a'),
        KEYPLANE_LISTEN: `127.0.0.1:${port}`,
        KEYPLANE_MASTER_KEY: masterKey,
        KEYPLANE_ADMIN_TOKEN: token,
        KEYPLANE_HEALTH_SCHEDULE: 'off',
        ...appEnv(dir, 'crash-a', reloadCommand(dir, 'a', true)),
      },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    children.push(child);
    let stderr = '';
    child.stderr!.on('data', (c: Buffer) => (stderr += c.toString('utf8')));
    const url = `http://127.0.0.1:${port}`;
    await eventually(async () => ((await fetch(`${url}/healthz`)).ok ? true : undefined), 30_000, `instance a to serve (stderr: ${stderr})`);
    // Its first render's reload is running (and blocks); the key's revision waits behind it.
    await eventually(async () => (marks(dir).length ? true : undefined), 10_000, 'the first reload to start');
    const value = keyValue('sk-durable');
    const put = await fetch(`${url}/api/v1/admin/platform-keys/openai`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ api_key: value }),
    });
    expect(put.status).toBe(200);
    const envFile = path.join(dir, 'out', 'litellm.env');
    await waitForFile(envFile, (t) => envLine(t, 'OPENAI_API_KEY') === value);
    const latest = Number((await db.pool.query('SELECT max(revision) AS r FROM sync_revisions')).rows[0].r);
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    expect(await wish()).toEqual({ wanted: latest, done: 0 });
    expect(marks(dir)).toEqual(['a 1']);

    const b = await startTestApp({ db, masterKey, env: appEnv(dir, 'crash-b', reloadCommand(dir, 'b', false)) });
    apps.push(b);
    await eventually(async () => (marks(dir).includes(`b ${latest}`) ? true : undefined), 15_000, 'instance b to reload');
    await eventually(async () => ((await wish()).done === latest ? true : undefined), 5_000, 'the wish to be marked done');
    // The files were already current: b's own render changed nothing, the open wish made it reload.
    expect((await b.kp.sync!.syncer.status()).last_render).toMatchObject({ status: 'unchanged', trigger: 'leader' });
    expect(envLine(readFileSync(envFile, 'utf8'), 'OPENAI_API_KEY')).toBe(value);
    expect(b.logs()).toContain('a reload wished for earlier has not finished');
  });

  it('the lead moves during a reload: the new leader reloads, the old one starts no further try', async () => {
    const dir = path.join(work, 'lead');
    mkdirSync(dir);
    const a = await startTestApp({ db, masterKey, env: appEnv(dir, 'move-a', reloadCommand(dir, 'a', true)) });
    apps.push(a);
    const b = await startTestApp({ db, masterKey, env: appEnv(dir, 'move-b', reloadCommand(dir, 'b', false)) });
    apps.push(b);
    expect(a.kp.sync!.leader.isLeader).toBe(true);
    await eventually(async () => (marks(dir).length ? true : undefined), 10_000, 'a reload on a');
    const value = keyValue('sk-moved');
    await a.api().put('/api/v1/admin/platform-keys/openai').send({ api_key: value }).expect(200);
    await waitForFile(path.join(dir, 'out', 'litellm.env'), (t) => envLine(t, 'OPENAI_API_KEY') === value);
    const { wanted } = await wish();
    expect((await wish()).done).toBeLessThan(wanted);

    const acquired = b.kp.events.waitFor('leader:acquired', undefined, 15_000);
    expect(await terminateBackends(db.name, leaderAppName('move-a'))).toBe(1);
    await acquired;
    await eventually(async () => ((await wish()).done >= wanted ? true : undefined), 15_000, 'the new leader to finish the reload');
    expect(marks(dir).filter((m) => m.startsWith('b '))).toHaveLength(1);
    // a's blocked reload ends now (its command dies): a no longer leads, so it neither retries it
    // nor runs the revision that waited behind it.
    const aPid = Number(readFileSync(path.join(dir, 'a.pid'), 'utf8').trim());
    process.kill(-aPid, 'SIGKILL');
    await a.kp.reloads!.whenIdle();
    expect(marks(dir).filter((m) => m.startsWith('a '))).toHaveLength(1);
  });

  it('a reload that failed every try is handed over again by the reconcile, and succeeds once LiteLLM can be reached', async () => {
    const dir = path.join(work, 'retry');
    mkdirSync(dir);
    const down = path.join(dir, 'engine-down');
    writeFileSync(down, '');
    const t = await startTestApp({
      db,
      masterKey,
      env: { ...appEnv(dir, 'retry-a', `test ! -e ${down} || { echo "engine unreachable" >&2; exit 1; }`), KEYPLANE_RECONCILE_INTERVAL: '1s' },
    });
    apps.push(t);
    const failed = t.kp.events.waitFor('reload:failed', (e) => !e.superseded, 20_000);
    await t.api().put('/api/v1/admin/platform-keys/openai').send({ api_key: keyValue('sk-retry') }).expect(200);
    const f = await failed;
    expect(f.attempts).toBe(3);
    const { wanted } = await wish();
    expect((await wish()).done).toBeLessThan(wanted);
    rmSync(down);
    const done = await t.kp.events.waitFor('reload:done', undefined, 15_000);
    expect(done.result.status).toBe('ok');
    await eventually(async () => ((await wish()).done >= wanted ? true : undefined), 5_000, 'the wish to be marked done');
  });
});
