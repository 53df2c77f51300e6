import { randomUUID } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { PlatformKeysService } from '../src/features/platform-keys/platform-keys-service';
import { BaseConfigError } from '../src/sync/base-config';
import { loadSettings } from '../src/config';
import { SafeEmitter } from '../src/events';
import { loadDesiredState } from '../src/sync/desired-state';
import type { RenderResult, SyncEvents } from '../src/sync/sync-events';
import { Syncer, syncerOptions } from '../src/sync/syncer';
import { createTestDatabase, type TestDatabase } from './helpers/db';
import { captureLog, envLine, keyService, keyValue, syncInstance, TEST_CTX, waitForFile, type SyncInstance } from './helpers/sync';
import { nextEvent } from './helpers/wait';

describe('syncer against a real database', () => {
  let db: TestDatabase;
  let keys: PlatformKeysService;
  let inst: SyncInstance;
  const logs = captureLog();
  const secretsSeen: string[] = [];
  const allEvents: unknown[] = [];
  /** The env file as it was on disk at the moment each reload was handed over. */
  const filesAtReload: string[] = [];

  async function put(name: string, value = keyValue()): Promise<string> {
    secretsSeen.push(value);
    await keys.put(name, { api_key: value }, TEST_CTX);
    return value;
  }
  const file = (name: string) => path.join(inst.dir, name);

  beforeAll(async () => {
    db = await createTestDatabase();
    keys = keyService(db.pool, logs.secrets);
    await put('openai');
    await db.pool.query(`INSERT INTO models (id, model_name, provider, model) VALUES ($1, 'gpt-4o', 'openai', 'gpt-4o')`, [randomUUID()]);
    inst = syncInstance(db.url, db.pool, keys, {
      logs,
      reload: (req) => filesAtReload.push(readFileSync(req.envPath, 'utf8')),
      reloadStatus: () => ({ status: 'ok', revision: 'from the reload queue' }),
    });
    for (const e of ['render:done', 'render:failed', 'leader:acquired', 'watcher:notification'] as const) inst.events.on(e, (p) => allEvents.push(p));
    await inst.runtime.start();
  });
  afterAll(async () => {
    await inst.runtime.stop();
    await db.drop();
    rmSync(inst.dir, { recursive: true, force: true });
  });

  it('renders at once on start and records revision 1', async () => {
    const env = readFileSync(file('litellm.env'), 'utf8');
    expect(envLine(env, 'OPENAI_API_KEY')).toBe(secretsSeen[0]);
    expect(readFileSync(file('config.yaml'), 'utf8')).toContain('api_key: os.environ/OPENAI_API_KEY');
    const status = await inst.runtime.syncer.status();
    expect(status).toMatchObject({
      revision: { revision: 1, changed_files: ['config.yaml', 'litellm.env'], changed_keys: ['openai'], trigger: 'leader' },
      leader: { instance: inst.settings.instanceId, this_instance: true },
      last_render: { status: 'changed', trigger: 'leader', error: null },
      last_reload: { status: 'ok', revision: 'from the reload queue' },
    });
    expect(inst.reloads.map((r) => r.revision)).toEqual([1]);
  });

  it('a committed key change reaches the env file by itself and is handed to reload after both files are written', async () => {
    const done = inst.events.waitFor('render:done', (r) => r.changed);
    const reloadsBefore = inst.reloads.length;
    const value = await put('openai');
    await waitForFile(file('litellm.env'), (t) => envLine(t, 'OPENAI_API_KEY') === value);
    const result = await done;
    expect(result).toMatchObject({ changed: true, changedFiles: ['litellm.env'], changedKeys: ['openai'] });
    expect(result.trigger).toContain('notify');
    const req = inst.reloads[reloadsBefore]!;
    expect(envLine(filesAtReload[reloadsBefore]!, 'OPENAI_API_KEY')).toBe(value);
    expect(req).toMatchObject({ revision: result.revision, outputDir: inst.dir, env: { OPENAI_API_KEY: value } });
    expect(req.state.keys.find((k) => k.name === 'openai')?.value).toBe(value);
  });

  it('unchanged state rewrites nothing (same inode and mtime) and reloads nothing', async () => {
    const before = [statSync(file('config.yaml')), statSync(file('litellm.env'))];
    const reloads = inst.reloads.length;
    const outcome = await inst.runtime.syncer.syncNow();
    expect(outcome.status).toBe('unchanged');
    // A write that changes no rendered input (a timestamp) must not even render.
    const notified = inst.events.waitFor('watcher:notification', (n) => n.table === 'models');
    await db.pool.query(`UPDATE models SET updated_at = now()`);
    await notified;
    const again = await inst.runtime.syncer.syncNow();
    expect(again.status).toBe('unchanged');
    const after = [statSync(file('config.yaml')), statSync(file('litellm.env'))];
    for (const [i, b] of before.entries()) {
      expect(after[i]!.ino).toBe(b.ino);
      expect(after[i]!.mtimeMs).toBe(b.mtimeMs);
    }
    expect(inst.reloads.length).toBe(reloads);
  });

  it('forced reload hands the unchanged files over with the current revision', async () => {
    const rev = (await inst.runtime.syncer.latestRevision())!.revision;
    const reloads = inst.reloads.length;
    const outcome = await inst.runtime.syncer.syncNow({ forceReload: true });
    expect(outcome.status).toBe('unchanged');
    expect(inst.reloads.slice(reloads).map((r) => r.revision)).toEqual([rev]);
  });

  it('restorePrevious puts the previous files back, only while they are still that revision', async () => {
    const old = envLine(readFileSync(file('litellm.env'), 'utf8'), 'OPENAI_API_KEY');
    const done = inst.events.waitFor('render:done', (r) => r.changed);
    const value = await put('openai');
    await done;
    const req = inst.reloads[inst.reloads.length - 1]!;
    expect(envLine(readFileSync(req.envPath, 'utf8'), 'OPENAI_API_KEY')).toBe(value);
    expect(await req.restorePrevious()).toBe(true);
    expect(envLine(readFileSync(req.envPath, 'utf8'), 'OPENAI_API_KEY')).toBe(old);
    expect(statSync(req.envPath).mode & 0o777).toBe(0o600);
    // The state still says `value`: the next render writes it again, without calling that drift.
    const again = await inst.runtime.syncer.syncNow();
    expect(again).toMatchObject({ status: 'changed', result: { drift: [] } });
    expect(envLine(readFileSync(req.envPath, 'utf8'), 'OPENAI_API_KEY')).toBe(value);
    const newer = inst.events.waitFor('render:done', (r) => r.changed);
    const newest = await put('openai');
    await newer;
    expect(await req.restorePrevious()).toBe(false);
    expect(envLine(readFileSync(req.envPath, 'utf8'), 'OPENAI_API_KEY')).toBe(newest);
  });

  it('a deployment whose provider has no key is left out and shown in the status', async () => {
    const done = inst.events.waitFor('render:done', (r) => r.skipped.length > 0);
    await db.pool.query(`INSERT INTO models (id, model_name, provider, model) VALUES ($1, 'llama', 'groq', 'llama-3.1-8b-instant')`, [randomUUID()]);
    await done;
    expect(readFileSync(file('config.yaml'), 'utf8')).not.toContain('llama-3.1-8b-instant');
    const status = await inst.runtime.syncer.status();
    expect(status.skipped).toEqual([expect.objectContaining({ model_name: 'llama', provider: 'groq', reason: 'no_key' })]);
    const rendered = inst.events.waitFor('render:done', (r) => r.skipped.length === 0);
    await put('groq');
    await rendered;
    expect(readFileSync(file('config.yaml'), 'utf8')).toContain('model: groq/llama-3.1-8b-instant');
  });

  it('never puts a secret in a log line, an event or the status', async () => {
    const status = JSON.stringify(await inst.runtime.syncer.status());
    const events = JSON.stringify(allEvents);
    for (const s of secretsSeen) {
      expect(logs.text()).not.toContain(s);
      expect(events).not.toContain(s);
      expect(status).not.toContain(s);
    }
    expect(logs.text()).toContain('rendered and wrote LiteLLM files');
  });
});

describe('syncer checks and failures', () => {
  let db: TestDatabase;
  let keys: PlatformKeysService;
  const logs = captureLog();
  const instances: SyncInstance[] = [];

  beforeAll(async () => {
    db = await createTestDatabase();
    keys = keyService(db.pool, logs.secrets);
    await keys.put('openai', { api_key: keyValue() }, TEST_CTX);
  });
  afterEach(async () => {
    jest.useRealTimers();
    for (const i of instances.splice(0)) {
      await i.runtime.stop();
      rmSync(i.dir, { recursive: true, force: true });
    }
  });
  afterAll(async () => {
    await db.drop();
  });

  function make(env: Record<string, string> = {}): SyncInstance {
    const i = syncInstance(db.url, db.pool, keys, { logs, env });
    instances.push(i);
    return i;
  }

  it('a failing check command keeps the old files; the status shows its stderr tail with secrets masked', async () => {
    const flag = path.join(makeTempName(), 'fail');
    const i = make({ KEYPLANE_CHECK_COMMAND: `if [ -e ${flag} ]; then echo "rejected:" >&2; cat "$KEYPLANE_STAGED_ENV" >&2; exit 3; fi; test -s "$KEYPLANE_STAGED_CONFIG"` });
    await i.runtime.start();
    const envPath = path.join(i.dir, 'litellm.env');
    const before = readFileSync(envPath, 'utf8');
    const beforeIno = statSync(envPath).ino;
    writeFileSync(flag, '');
    try {
      const failed = i.events.waitFor('render:failed');
      const value = keyValue('sk-checked');
      await keys.put('openai', { api_key: value }, TEST_CTX);
      const failure = await failed;
      expect(failure).toMatchObject({ stage: 'check', message: 'the check command exited with 3' });
      expect(failure.stderrTail).toContain('rejected:');
      expect(failure.stderrTail).toContain('OPENAI_API_KEY=');
      expect(failure.stderrTail).not.toContain(value);
      expect(readFileSync(envPath, 'utf8')).toBe(before);
      expect(statSync(envPath).ino).toBe(beforeIno);
      expect(readdirSync(i.dir).filter((f) => f.endsWith('.tmp'))).toEqual([]);
      const status = await i.runtime.syncer.status();
      expect(status.last_render).toMatchObject({ status: 'failed', error: { stage: 'check', message: 'the check command exited with 3' } });
      expect(JSON.stringify(status)).not.toContain(value);
      expect(logs.text()).not.toContain(value);
    } finally {
      rmSync(flag, { force: true });
    }
    const outcome = await i.runtime.syncer.syncNow();
    expect(outcome.status).toBe('changed');
  });

  it('a base config that breaks at run time fails the render, keeps the files, and says where', async () => {
    const dir = makeTempName();
    const basePath = path.join(dir, 'base.yaml');
    writeFileSync(basePath, 'litellm_settings:\n  drop_params: true\n');
    const i = make({ KEYPLANE_BASE_CONFIG: basePath });
    await i.runtime.start();
    const config = path.join(i.dir, 'config.yaml');
    const before = readFileSync(config, 'utf8');
    expect(before).toContain('drop_params: true');
    writeFileSync(basePath, 'litellm_settings:\n  drop_params: true\nmodel_list: not-a-list\n');
    const outcome = await i.runtime.syncer.syncNow();
    expect(outcome).toMatchObject({ status: 'failed', failure: { stage: 'base_config', message: `KEYPLANE_BASE_CONFIG: ${basePath}:3: model_list must be a list for keyplane to merge into it` } });
    expect(readFileSync(config, 'utf8')).toBe(before);
    expect((await i.runtime.syncer.status()).last_render).toMatchObject({ status: 'failed', error: { stage: 'base_config' } });
    writeFileSync(basePath, 'litellm_settings:\n  drop_params: false\n');
    expect((await i.runtime.syncer.syncNow()).status).toBe('changed');
    expect(readFileSync(config, 'utf8')).toContain('drop_params: false');
  });

  it('a bad base config stops start-up with file, line and problem', async () => {
    const basePath = path.join(makeTempName(), 'base.yaml');
    writeFileSync(basePath, 'general_settings:\n  alerting: [slack\n');
    const i = make({ KEYPLANE_BASE_CONFIG: basePath });
    const err = await i.runtime.start().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(BaseConfigError);
    expect((err as Error).message).toMatch(new RegExp(`^KEYPLANE_BASE_CONFIG: ${basePath}:\\d+: `));
    expect(existsSync(path.join(i.dir, 'config.yaml'))).toBe(false);
  });

  it('the periodic reconcile brings back a deleted file and undoes a hand edit, with a warning', async () => {
    jest.useFakeTimers({ doNotFake: ['setImmediate', 'nextTick', 'queueMicrotask', 'performance', 'Date', 'hrtime'] });
    // The Syncer alone (no LISTEN, no leader election): only its own schedule can render here.
    const dir = makeTempName();
    const settings = loadSettings({ KEYPLANE_OUTPUT_DIR: dir, KEYPLANE_RECONCILE_INTERVAL: '5m' });
    const events = new SafeEmitter<SyncEvents>();
    const syncer = new Syncer(syncerOptions(settings, { pool: db.pool, loadState: () => loadDesiredState(db.pool, keys), log: logs.log, secrets: logs.secrets, events }));
    await syncer.start();
    try {
      const envPath = path.join(dir, 'litellm.env');
      const configPath = path.join(dir, 'config.yaml');
      const env = readFileSync(envPath, 'utf8');
      const config = readFileSync(configPath, 'utf8');
      rmSync(envPath);
      writeFileSync(configPath, config + 'hand_edit: true\n');

      // Listen before the timers fire the reconcile; the wait's deadline is on the real clock.
      const reconciled = nextEvent(events, 'render:done', (r) => r.trigger.split('+').includes('reconcile'));
      jest.advanceTimersByTime(5 * 60_000);
      const result: RenderResult = await reconciled;
      expect(result.drift.sort()).toEqual(['config.yaml', 'litellm.env']);
      expect(result.changedFiles.sort()).toEqual(['config.yaml', 'litellm.env']);
      expect(readFileSync(envPath, 'utf8')).toBe(env);
      expect(readFileSync(configPath, 'utf8')).toBe(config);
      expect(logs.text()).toMatch(/"level":"warn","message":"rendered files differ from what keyplane wrote[^"]*"/);
    } finally {
      await syncer.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

function makeTempName(): string {
  return mkdtempSync(path.join(os.tmpdir(), 'kp-sync-x-'));
}
