import { readdirSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import type { PlatformKeysService } from '../src/features/platform-keys/platform-keys-service';
import { createTestDatabase, type TestDatabase } from './helpers/db';
import { captureLog, keyService, keyValue, syncInstance, TEST_CTX, type SyncInstance } from './helpers/sync';

describe('LiteLLM authentication fails closed in the syncer', () => {
  let db: TestDatabase;
  let keys: PlatformKeysService;
  let inst: SyncInstance;
  const logs = captureLog();

  const authRequired = async (): Promise<boolean> => (await db.pool.query('SELECT auth_required FROM sync_state WHERE id = 1')).rows[0].auth_required;

  beforeAll(async () => {
    db = await createTestDatabase();
    keys = keyService(db.pool, logs.secrets);
    await keys.put('openai', { api_key: keyValue() }, TEST_CTX);
    inst = syncInstance(db.url, db.pool, keys, { logs });
    await inst.runtime.start();
  });
  afterAll(async () => {
    await inst.runtime.stop();
    await db.drop();
    rmSync(inst.dir, { recursive: true, force: true });
  });

  it('a render that puts the master key into the config marks auth as required', async () => {
    expect(await authRequired()).toBe(false);
    const rendered = inst.events.waitFor('render:done', (r) => r.changed && r.changedKeys.includes('litellm_master_key'));
    await keys.put('litellm_master_key', { api_key: keyValue('sk-master') }, TEST_CTX);
    await rendered;
    expect(readFileSync(path.join(inst.dir, 'config.yaml'), 'utf8')).toContain('master_key: os.environ/LITELLM_MASTER_KEY');
    expect(await authRequired()).toBe(true);
  });

  it('without the master key afterwards, the render fails at stage render, says why, and leaves the files alone', async () => {
    const config = readFileSync(path.join(inst.dir, 'config.yaml'), 'utf8');
    const env = readFileSync(path.join(inst.dir, 'litellm.env'), 'utf8');
    const failed = inst.events.waitFor('render:failed');
    // Around the API, which refuses this delete: the renderer must still not drop authentication.
    await db.pool.query(`DELETE FROM platform_keys WHERE name = 'litellm_master_key'`);
    const failure = await failed;
    expect(failure).toMatchObject({ stage: 'render', message: expect.stringContaining('without it LiteLLM would serve without authentication') });
    expect(failure.message).not.toContain('rendering failed');
    expect(readFileSync(path.join(inst.dir, 'config.yaml'), 'utf8')).toBe(config);
    expect(readFileSync(path.join(inst.dir, 'litellm.env'), 'utf8')).toBe(env);
    expect(readdirSync(inst.dir).sort()).toEqual(['config.yaml', 'config.yaml.bak', 'litellm.env']);
    const status = await inst.runtime.syncer.status();
    expect(status.last_render).toMatchObject({ status: 'failed', error: { stage: 'render', message: failure.message } });
    expect(await inst.runtime.syncer.syncNow()).toMatchObject({ status: 'failed', failure: { stage: 'render' } });
    expect(logs.text()).toMatch(/"level":"error","message":"render failed; the live files are unchanged"/);
  });
});
