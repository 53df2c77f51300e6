import { existsSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import type { PlatformKeysService } from '../src/features/platform-keys/platform-keys-service';
import { SafeEmitter } from '../src/events';
import type { ReloadRequest } from '../src/reload/reloader';
import { leaderAppName } from '../src/sync/leader';
import { watcherAppName } from '../src/sync/sync-runtime';
import { createTestDatabase, terminateBackends, type TestDatabase } from './helpers/db';
import { captureLog, envLine, keyService, keyValue, syncInstance, TEST_CTX, waitForFile, type SyncInstance } from './helpers/sync';
import { nextEvent } from './helpers/wait';

describe('sync across lost connections and instances', () => {
  let db: TestDatabase;
  let keys: PlatformKeysService;
  const logs = captureLog();
  const instances: SyncInstance[] = [];

  beforeAll(async () => {
    db = await createTestDatabase();
    keys = keyService(db.pool, logs.secrets);
    await keys.put('openai', { api_key: keyValue() }, TEST_CTX);
    await db.pool.query(`INSERT INTO models (id, model_name, provider, model) VALUES (gen_random_uuid(), 'gpt-4o', 'openai', 'gpt-4o')`);
  });
  afterEach(async () => {
    for (const i of instances.splice(0).reverse()) {
      await i.runtime.stop();
      rmSync(i.dir, { recursive: true, force: true });
    }
  });
  afterAll(async () => {
    await db.drop();
  });

  async function start(instanceId: string, reload?: (req: ReloadRequest) => void): Promise<SyncInstance> {
    const i = syncInstance(db.url, db.pool, keys, { logs, instanceId, reload });
    instances.push(i);
    await i.runtime.start();
    return i;
  }

  it('a change committed while the LISTEN session is being killed still reaches the files (resync on reconnect)', async () => {
    const a = await start('listen-a');
    const config = path.join(a.dir, 'config.yaml');
    expect(readFileSync(config, 'utf8')).toContain('model: openai/gpt-4o');
    const reconnected = a.events.waitFor('watcher:connected', (e) => e.reconnect);
    const resynced = a.events.waitFor('render:done', (r) => r.trigger.includes('reconnect'));
    // Kill the LISTEN session and disable the provider in one transaction: the NOTIFY goes out
    // at commit, when that session is already gone, so only the resync can catch the change.
    const c = await db.pool.connect();
    try {
      await c.query('BEGIN');
      await c.query(`UPDATE providers SET enabled = false WHERE slug = 'openai'`);
      const { rows } = await c.query(`SELECT count(pg_terminate_backend(pid))::int AS n FROM pg_stat_activity WHERE datname = current_database() AND application_name = $1`, [
        watcherAppName('listen-a'),
      ]);
      expect(rows[0].n).toBe(1);
      await c.query('COMMIT');
    } finally {
      c.release();
    }
    await reconnected;
    await resynced;
    await waitForFile(config, (t) => !t.includes('model: openai/gpt-4o'));
    expect((await a.runtime.syncer.status()).skipped).toEqual([expect.objectContaining({ provider: 'openai', reason: 'provider_disabled' })]);
    await db.pool.query(`UPDATE providers SET enabled = true WHERE slug = 'openai'`);
    await waitForFile(config, (t) => t.includes('model: openai/gpt-4o'));
  });

  it('the LISTEN connection killed while a key changes: the env file still follows, and LISTEN works again after', async () => {
    const a = await start('listen-b');
    const env = path.join(a.dir, 'litellm.env');
    const value = keyValue('sk-during-kill');
    const reconnected = a.events.waitFor('watcher:connected', (e) => e.reconnect);
    const [killed] = await Promise.all([terminateBackends(db.name, watcherAppName('listen-b')), keys.put('openai', { api_key: value }, TEST_CTX)]);
    expect(killed).toBe(1);
    await waitForFile(env, (t) => envLine(t, 'OPENAI_API_KEY') === value);
    await reconnected;
    const next = keyValue('sk-after-kill');
    // Render events fire after the write, so the file read in the match is the one that render wrote.
    // Nudges that arrive together fold into one render whose trigger names them all (notify+...).
    const notified = a.events.waitFor('render:done', (r) => r.trigger.split('+').includes('notify') && envLine(readFileSync(env, 'utf8'), 'OPENAI_API_KEY') === next);
    await keys.put('openai', { api_key: next }, TEST_CTX);
    await notified;
    expect(logs.text()).toContain('LISTEN connection lost; reconnecting');
  });

  it('two instances: exactly one renders; when its session dies the other takes over within seconds', async () => {
    const a = await start('inst-a');
    const b = await start('inst-b');
    expect(a.runtime.leader.isLeader).toBe(true);
    expect(b.runtime.leader.isLeader).toBe(false);
    expect(existsSync(path.join(a.dir, 'litellm.env'))).toBe(true);
    expect(existsSync(path.join(b.dir, 'litellm.env'))).toBe(false);
    expect((await b.runtime.syncer.status()).leader).toEqual({ instance: 'inst-a', since: expect.any(String), this_instance: false });

    const lost = a.events.waitFor('leader:lost');
    const acquired = b.events.waitFor('leader:acquired', undefined, 5000);
    const tookOver = b.events.waitFor('render:done', (r) => r.trigger.split('+').includes('leader'), 5000);
    const t0 = Date.now();
    expect(await terminateBackends(db.name, leaderAppName('inst-a'))).toBe(1);
    expect(await lost).toEqual({ instance: 'inst-a', reason: expect.any(String) });
    await acquired;
    await tookOver;
    expect(Date.now() - t0).toBeLessThan(5000);
    expect(a.runtime.leader.isLeader).toBe(false);
    expect(existsSync(path.join(b.dir, 'litellm.env'))).toBe(true);

    const value = keyValue('sk-after-failover');
    const aEnvBefore = readFileSync(path.join(a.dir, 'litellm.env'), 'utf8');
    await keys.put('openai', { api_key: value }, TEST_CTX);
    await waitForFile(path.join(b.dir, 'litellm.env'), (t) => envLine(t, 'OPENAI_API_KEY') === value);
    expect(readFileSync(path.join(a.dir, 'litellm.env'), 'utf8')).toBe(aEnvBefore);
    expect((await a.runtime.syncer.status()).leader).toEqual({ instance: 'inst-b', since: expect.any(String), this_instance: false });
    expect((await a.runtime.syncer.syncNow()).status).toBe('skipped');
    expect(a.runtime.leader.isLeader).toBe(false);
  });

  it('a follower forwards a sync request to the leader through the database', async () => {
    const a = await start('fwd-a');
    const b = await start('fwd-b');
    // Nudges that arrive together are folded into one render whose trigger names them all.
    const rendered = a.events.waitFor('render:done', (r) => r.trigger.includes('notify'));
    const seen = a.events.waitFor('watcher:notification', (n) => n.table === 'manual');
    await b.runtime.syncer.forwardToLeader();
    expect(await seen).toEqual({ table: 'manual', op: 'sync', id: 'fwd-b' });
    await rendered;
  });

  it('a forwarded force_reload reaches the leader: it hands the unchanged files to reload', async () => {
    const handed = new SafeEmitter<{ reload: ReloadRequest }>();
    const a = await start('force-a', (req) => handed.emit('reload', req));
    const b = await start('force-b');
    const before = a.reloads.length;
    // Waits for the hand-over itself; a loop on setImmediate here would starve the leader it waits for.
    const forced = nextEvent(handed, 'reload');
    await b.runtime.syncer.forwardToLeader({ forceReload: true });
    const req = await forced;
    expect(a.reloads.length).toBe(before + 1);
    // The same files again (nothing changed), handed over because the follower asked.
    expect(req.revision).toBe(a.reloads[0]!.revision);
    expect(b.reloads).toHaveLength(0);
  });

  it('a leader that stops hands over at once (it unlocks instead of dying)', async () => {
    const a = await start('stop-a');
    const b = await start('stop-b');
    // Well under the ~25 s a dead session would take to free the lock: the stopping leader unlocks.
    const acquired = b.events.waitFor('leader:acquired', undefined, 10_000);
    await a.runtime.stop();
    instances.splice(instances.indexOf(a), 1);
    rmSync(a.dir, { recursive: true, force: true });
    await acquired;
    const doc = YAML.parse(await waitForFile(path.join(b.dir, 'config.yaml'), () => true));
    expect(doc.model_list).toHaveLength(1);
  });
});
