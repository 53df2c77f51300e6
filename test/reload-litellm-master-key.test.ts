import { randomBytes } from 'node:crypto';
import type { ReloadResult } from '../src/reload/reloader';
import { litellmModelId } from '../src/reload/litellm-plan';
import { startTestApp, type TestApp } from './helpers/app';
import { createTestDatabase, type TestDatabase } from './helpers/db';
import { FakeLitellm } from './helpers/fake-litellm';
import { baseState, capturingLogger, reloaderFor, request, resetLitellmState } from './helpers/litellm-api';

/**
 * LiteLLM reads its master key once, at start. After `litellm_master_key` is rotated it keeps the
 * old one until it restarts: keyplane goes on using the version LiteLLM accepts, says so in the
 * sync status, and moves on to the new one once LiteLLM does.
 */

const M1 = `sk-m1-${randomBytes(16).toString('hex')}`;
const M2 = `sk-m2-${randomBytes(16).toString('hex')}`;
const M3 = `sk-m3-${randomBytes(16).toString('hex')}`;
const OR1 = `sk-or-v1-${randomBytes(16).toString('hex')}`;
const OR2 = `sk-or-v1-${randomBytes(16).toString('hex')}`;

describe('KEYPLANE_RELOAD=litellm-api across a rotation of litellm_master_key', () => {
  let t: TestApp;
  let fake: FakeLitellm;

  beforeAll(async () => {
    fake = await FakeLitellm.start({ masterKey: M1 });
    t = await startTestApp({ env: { KEYPLANE_RELOAD: 'litellm-api', KEYPLANE_LITELLM_URL: fake.url } });
  });
  afterAll(async () => {
    await t.close();
    await fake.stop();
  });

  const reloaded = async (check: (r: ReloadResult) => boolean) => (await t.kp.events.waitFor('reload:done', (e) => check(e.result), 15_000)).result;
  const known = async () => (await t.db.pool.query<{ known_master_version: number | null }>('SELECT known_master_version FROM litellm_api_state')).rows[0]!.known_master_version;

  it('keeps using the version LiteLLM accepts, says so, and moves on once LiteLLM restarts', async () => {
    await t.api().put('/api/v1/admin/platform-keys/litellm_master_key').send({ api_key: M1 }).expect(200);
    await t.api().put('/api/v1/admin/platform-keys/openrouter').send({ api_key: OR1 }).expect(200);
    let id = '';
    const first = reloaded(() => fake.models.has(litellmModelId(id, 'openrouter')));
    id = (await t.api().post('/api/v1/admin/models').send({ model_name: 'balanced', provider: 'openrouter', model: 'openai/gpt-4o-mini' }).expect(201)).body.id;
    expect((await first).error).toBeUndefined();
    expect(await known()).toBe(1);

    // The rotation reaches LiteLLM's env file; LiteLLM itself keeps M1 until it restarts.
    fake.rotateMasterKey(M2);
    await t.kp.reloads!.whenIdle();
    const note = 'LiteLLM still accepts master key version 1; version 2 takes effect when LiteLLM restarts';
    const rotated = reloaded((r) => r.error?.includes(note) === true);
    await t.api().put('/api/v1/admin/platform-keys/litellm_master_key').send({ api_key: M2 }).expect(200);
    expect(await rotated).toMatchObject({ status: 'ok', targets: [expect.objectContaining({ status: 'ok', error: `note: ${note}` })] });
    expect(await known()).toBe(1);

    // Later reloads keep working with M1, and the sync status says why M2 is not in use yet.
    const keyRotated = reloaded(() => fake.credentials.get('keyplane-openrouter')?.credential_values.api_key === OR2);
    await t.api().put('/api/v1/admin/platform-keys/openrouter').send({ api_key: OR2 }).expect(200);
    expect((await keyRotated).status).toBe('ok');
    const status = await t.api().get('/api/v1/admin/sync').expect(200);
    expect(status.body.last_reload.last).toMatchObject({ status: 'ok', error: `note: ${note}` });

    // LiteLLM restarts with M2: the next reload is refused M1, is accepted M2, and remembers it.
    fake.restart();
    await t.kp.reloads!.whenIdle();
    fake.clearRequests();
    const after = reloaded((r) => r.error === undefined);
    await t.api().post('/api/v1/admin/sync').send({ force_reload: true }).expect(200);
    await after;
    expect(await known()).toBe(2);
    const auths = fake.requests.filter((r) => r.path === '/credentials' && r.method === 'GET').map((r) => r.status);
    expect(auths).toEqual([401, 200]);
    // From now on M2 alone.
    fake.clearRequests();
    const again = reloaded((r) => r.error === undefined);
    await t.api().post('/api/v1/admin/sync').send({ force_reload: true }).expect(200);
    await again;
    expect(fake.requests.filter((r) => r.status === 401)).toEqual([]);

    const finalStatus = await t.api().get('/api/v1/admin/sync').expect(200);
    for (const s of [M1, M2, OR1, OR2]) {
      expect(t.logs()).not.toContain(s);
      expect(JSON.stringify(finalStatus.body)).not.toContain(s);
    }
  });
});

describe('litellm-api master key choice', () => {
  let db: TestDatabase;
  let fake: FakeLitellm;
  beforeAll(async () => {
    db = await createTestDatabase();
  });
  afterAll(async () => {
    await db.drop();
  });
  beforeEach(async () => {
    await resetLitellmState(db);
  });
  afterEach(async () => {
    await fake.stop();
  });

  function stateWithMaster(value: string, version: number) {
    const state = baseState();
    Object.assign(state.keys.find((k) => k.name === 'litellm_master_key')!, { value, version });
    return state;
  }

  it('KEYPLANE_LITELLM_MASTER_KEY wins over the stored key, and leaves the remembered version alone', async () => {
    fake = await FakeLitellm.start({ masterKey: M3 });
    const { log } = capturingLogger();
    const result = await reloaderFor(fake, db, log, { masterKey: M3 }).reload(request(stateWithMaster(M1, 7), 1));
    expect(result.status).toBe('ok');
    expect(result.error).toBeUndefined();
    const { rows } = await db.pool.query('SELECT known_master_version FROM litellm_api_state');
    expect(rows[0]!.known_master_version).toBeNull();
  });

  it('when LiteLLM refuses every version it is told which to restart with, never a key', async () => {
    fake = await FakeLitellm.start({ masterKey: M3 });
    const { log, logs } = capturingLogger();
    await db.pool.query('UPDATE litellm_api_state SET known_master_version = 1');
    // Version 1 is not stored in this database: only the current one can be tried.
    const result = await reloaderFor(fake, db, log).reload(request(stateWithMaster(M2, 2), 1));
    expect(result.status).toBe('failed');
    expect(result.error).toBe(
      'LiteLLM refused litellm_master_key (version 2): restart LiteLLM with the stored master key, or set KEYPLANE_LITELLM_MASTER_KEY to the one it runs with',
    );
    expect(fake.writes()).toEqual([]);
    for (const s of [M1, M2, M3]) expect(logs()).not.toContain(s);
  });
});
