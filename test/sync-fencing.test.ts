import { readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import type { PlatformKeysService } from '../src/features/platform-keys/platform-keys-service';
import { leaderAppName } from '../src/sync/leader';
import { createTestDatabase, terminateBackends, type TestDatabase } from './helpers/db';
import { captureLog, envLine, keyService, keyValue, syncInstance, TEST_CTX, waitForFile, type SyncInstance, type SyncInstanceOptions } from './helpers/sync';
import { startTcpProxy, type TcpProxy } from './helpers/tcp-proxy';

/**
 * Two leaders must never write. The old leader's session goes through a proxy that then swallows
 * everything: to the old leader the database just hangs, while the server ends that session (and
 * frees the lock) and another instance takes over.
 */
describe('leader fencing against a session that hangs', () => {
  let db: TestDatabase;
  let keys: PlatformKeysService;
  let proxy: TcpProxy;
  const logs = captureLog();
  const instances: SyncInstance[] = [];

  beforeAll(async () => {
    db = await createTestDatabase();
    keys = keyService(db.pool, logs.secrets);
    await keys.put('openai', { api_key: keyValue() }, TEST_CTX);
  });
  beforeEach(async () => {
    const u = new URL(db.url);
    proxy = await startTcpProxy({ host: u.hostname, port: Number(u.port) });
  });
  afterEach(async () => {
    for (const i of instances.splice(0).reverse()) {
      await i.runtime.stop();
      rmSync(i.dir, { recursive: true, force: true });
    }
    await proxy.close();
  });
  afterAll(async () => {
    await db.drop();
  });

  async function start(instanceId: string, opts: SyncInstanceOptions = {}): Promise<SyncInstance> {
    const i = syncInstance(db.url, db.pool, keys, { logs, instanceId, ...opts });
    instances.push(i);
    await i.runtime.start();
    return i;
  }

  /** `a` leads through the proxy, `b` follows; then a's path goes dead and the server ends a's session, so `b` takes the lock. */
  async function splitBrain(a: SyncInstance, b: SyncInstance): Promise<void> {
    expect(a.runtime.leader.isLeader).toBe(true);
    expect(b.runtime.leader.isLeader).toBe(false);
    const acquired = b.events.waitFor('leader:acquired', undefined, 10_000);
    proxy.blackhole();
    expect(await terminateBackends(db.name, leaderAppName(a.settings.instanceId))).toBe(1);
    await acquired;
  }

  it('the old leader cannot swap files: the revision is recorded on its own session, which does not answer', async () => {
    // Its periodic check is far off: only the fence before the swap can stop it here.
    const a = await start('fence-a', { sessionUrl: proxy.via(db.url), leaderTimeoutMs: 1500, leaderCheckMs: 600_000 });
    const b = await start('fence-b');
    await splitBrain(a, b);
    expect(a.runtime.leader.isLeader).toBe(true);

    const aEnv = path.join(a.dir, 'litellm.env');
    const before = readFileSync(aEnv, 'utf8');
    const value = keyValue('sk-after-split');
    await keys.put('openai', { api_key: value }, TEST_CTX);
    await waitForFile(path.join(b.dir, 'litellm.env'), (t) => envLine(t, 'OPENAI_API_KEY') === value);

    const lost = a.events.waitFor('leader:lost', undefined, 10_000);
    const outcome = await a.runtime.syncer.syncNow();
    expect(outcome).toEqual({ status: 'skipped', reason: 'this instance lost the lead before the swap' });
    expect(await lost).toEqual({ instance: 'fence-a', reason: expect.stringContaining('did not answer within 1500 ms') });
    expect(a.runtime.leader.isLeader).toBe(false);
    expect(readFileSync(aEnv, 'utf8')).toBe(before);
    expect(logs.text()).toContain('lost the lead during a render');
    // Every revision was written by the leader that held the lock.
    const { rows } = await db.pool.query(`SELECT instance_id FROM sync_revisions WHERE revision > 1 ORDER BY revision`);
    expect(rows.map((r) => r.instance_id)).toEqual(rows.map(() => 'fence-b'));
  });

  it('the old leader steps down by itself when its session stops answering the lock check', async () => {
    const a = await start('check-a', { sessionUrl: proxy.via(db.url), leaderTimeoutMs: 1000, leaderCheckMs: 200 });
    const b = await start('check-b');
    const lost = a.events.waitFor('leader:lost', undefined, 10_000);
    await splitBrain(a, b);
    expect(await lost).toEqual({ instance: 'check-a', reason: expect.stringContaining('did not answer within 1000 ms') });
    expect((await a.runtime.syncer.syncNow()).status).toBe('skipped');
  });
});
