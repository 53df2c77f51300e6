import { readFileSync } from 'node:fs';
import path from 'node:path';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { randomBytes, randomUUID } from 'node:crypto';
import type { Logger } from '../src/log';
import { LitellmApiError, LitellmClient } from '../src/litellm/client';
import { litellmModelId } from '../src/reload/litellm-plan';
import type { DesiredState } from '../src/sync/desired-state';
import { FakeLitellm } from './helpers/fake-litellm';
import { approvalsFor } from './helpers/state';
import { startTestApp, type TestApp } from './helpers/app';
import { createTestDatabase, type TestDatabase } from './helpers/db';
import {
  baseState, capturingLogger, key, ledger, D_CLAUDE, D_FIREWORKS, D_GROQ, D_OPENAI, M_GROQ, M_OPENAI, MASTER, model, reloaderFor, request, resetLitellmState, setKey,
} from './helpers/litellm-api';

/** Every secret the state holds, to check that none reaches a log line, an error or a request it should not. */
function secretsOf(state: DesiredState): string[] {
  return state.keys.map((k) => k.value);
}

describe('litellm-api reloader', () => {
  let db: TestDatabase;
  let fake: FakeLitellm;
  let log: Logger;
  let logs: () => string;
  let state: DesiredState;
  let revision: number;

  beforeAll(async () => {
    db = await createTestDatabase();
  });
  afterAll(async () => {
    await db.drop();
  });

  beforeEach(async () => {
    fake = await FakeLitellm.start({
      masterKey: MASTER,
      configCredentials: [{ credential_name: 'config-azure', credential_values: { api_key: 'azure-config-key-123456' }, credential_info: {} }],
      configModels: [{ model_name: 'config-model', litellm_params: { model: 'openai/gpt-4' }, model_info: {} }],
    });
    ({ log, logs } = capturingLogger());
    await resetLitellmState(db);
    state = baseState();
    revision = 1;
  });

  afterEach(async () => {
    await fake.stop();
  });

  const reloader = (opts: { masterKey?: string; url?: string; timeoutMs?: number } = {}) => reloaderFor(fake, db, log, opts);
  const run = (r = reloader()) => r.reload(request(state, revision++));

  it('first run creates the credentials, then the models that reference them', async () => {
    const result = await run();
    expect(result.status).toBe('ok');
    expect(result.error).toBeUndefined();
    expect(result.targets).toHaveLength(1);
    expect(result.targets[0]).toMatchObject({ target: fake.url, status: 'ok' });
    expect(result.targets[0]!.finishedAt.getTime()).toBeGreaterThanOrEqual(result.targets[0]!.startedAt.getTime());

    expect(fake.writes().map((w) => `${w.method} ${w.path}`)).toEqual(['POST /credentials', 'POST /credentials', 'POST /model/new', 'POST /model/new']);
    const openai = fake.credentials.get('keyplane-openai')!;
    // A credential holds the key alone: each model carries its own api_base.
    expect(openai.credential_values).toEqual({ api_key: state.keys[0]!.value });
    expect(openai.credential_info).toMatchObject({ custom_llm_provider: 'openai', description: 'managed by keyplane', keyplane_managed: true });
    expect(fake.credentials.get('keyplane-anthropic')!.credential_values).toEqual({ api_key: state.keys[1]!.value });
    // The master key, a disabled provider's key and a provider without a key make no credential.
    expect([...fake.credentials.keys()].sort()).toEqual(['keyplane-anthropic', 'keyplane-openai']);

    const gpt = fake.models.get(D_OPENAI)!;
    expect(gpt.model_name).toBe('gpt-4o-mini');
    expect(gpt.litellm_params).toEqual({ model: 'openai/gpt-4o-mini', api_base: 'https://api.openai.com/v1', rpm: 100, litellm_credential_name: 'keyplane-openai' });
    expect(gpt.model_info).toMatchObject({ id: D_OPENAI, keyplane_id: M_OPENAI, keyplane_key: 'openai', team: 'core' });
    // Like the renderer: no model for a provider without a key, or one that is turned off.
    expect(fake.models.has(D_GROQ)).toBe(false);
    expect(fake.models.has(D_FIREWORKS)).toBe(false);
    expect(fake.models.get(D_CLAUDE)!.litellm_params).toEqual({ model: 'anthropic/claude-3-5-sonnet-20241022', litellm_credential_name: 'keyplane-anthropic' });
    expect(logs()).toMatch(/litellm-api reload done/);
    expect(logs()).toMatch(/"created":4/);
    // Everything keyplane created is in its ledger (a model by LiteLLM's id, which is keyplane's).
    expect(await ledger(db)).toEqual(['credential:keyplane-anthropic', 'credential:keyplane-openai', `model:${[D_CLAUDE, D_OPENAI].sort()[0]}`, `model:${[D_CLAUDE, D_OPENAI].sort()[1]}`]);
  });

  it('a second run with the same state sends no write', async () => {
    expect((await run()).status).toBe('ok');
    fake.clearRequests();
    const again = await run();
    expect(again.status).toBe('ok');
    expect(fake.writes()).toEqual([]);
    expect(fake.requests.map((r) => `${r.method} ${r.path}`).sort()).toEqual(['GET /credentials', 'GET /health/readiness', 'GET /model/info']);
  });

  it('a rotated key PATCHes only that credential, with only the new value, and never a masked one', async () => {
    await run();
    fake.clearRequests();
    const rotated = `sk-openai-rotated-${randomBytes(16).toString('hex')}`;
    setKey(state, 'openai', rotated);
    const result = await run();
    expect(result.status).toBe('ok');
    const writes = fake.writes();
    expect(writes.map((w) => `${w.method} ${w.path}`)).toEqual(['PATCH /credentials/keyplane-openai']);
    const body = writes[0]!.body as { credential_name: string; credential_values: Record<string, string>; credential_info: Record<string, unknown> };
    expect(body.credential_name).toBe('keyplane-openai');
    expect(body.credential_values).toEqual({ api_key: rotated });
    expect(Object.keys(body.credential_info)).toEqual(['keyplane_digests']);
    expect(fake.credentials.get('keyplane-openai')!.credential_values).toEqual({ api_key: rotated });
    expect(fake.maskedEchoes).toBe(0);

    fake.clearRequests();
    expect((await run()).status).toBe('ok');
    expect(fake.writes()).toEqual([]);
  });

  it('masked values are never sent back, whatever changes', async () => {
    await run();
    // Changes that touch fields LiteLLM masks on the way out (api_key, litellm_credential_name).
    setKey(state, 'anthropic', `sk-ant-new-${randomBytes(16).toString('hex')}`);
    state.models[0]!.rpm = 250;
    state.models[1]!.modelName = 'claude-sonnet';
    state.providers.find((p) => p.slug === 'anthropic')!.apiBase = 'https://anthropic.example/v1';
    // An admin approved the new host for the anthropic key.
    state.approvals = approvalsFor(state.providers, state.models);
    fake.clearRequests();
    expect((await run()).status).toBe('ok');
    expect(fake.maskedEchoes).toBe(0);
    for (const w of fake.writes()) expect(JSON.stringify(w.body)).not.toMatch(/\*\*\*\*/);

    const patchGpt = fake.writes().find((w) => w.path === `/model/${D_OPENAI}/update`)!;
    expect(patchGpt.method).toBe('PATCH');
    expect((patchGpt.body as { litellm_params: unknown }).litellm_params).toEqual({ rpm: 250 });
    expect(patchGpt.body).not.toHaveProperty('model_name');
    expect(fake.models.get(D_OPENAI)!.litellm_params).toMatchObject({ rpm: 250, litellm_credential_name: 'keyplane-openai' });

    const patchClaude = fake.writes().find((w) => w.path === `/model/${D_CLAUDE}/update`)!;
    expect(patchClaude.body).toMatchObject({ model_name: 'claude-sonnet' });
    expect((patchClaude.body as { litellm_params: unknown }).litellm_params).toEqual({ api_base: 'https://anthropic.example/v1' });

    const patchCred = fake.writes().find((w) => w.path === '/credentials/keyplane-anthropic')!;
    expect((patchCred.body as { credential_values: unknown }).credential_values).toEqual({ api_key: state.keys[1]!.value });
    expect(fake.models.get(D_CLAUDE)!.model_name).toBe('claude-sonnet');

    fake.clearRequests();
    expect((await run()).status).toBe('ok');
    expect(fake.writes()).toEqual([]);
  });

  it('a removed model is deleted, and its key\'s credential once no model uses it; a provider turned off takes its models and then its credential', async () => {
    state.keys.push(key('groq', 'GROQ_API_KEY', `gsk_${randomBytes(16).toString('hex')}`));
    state.models.push(model(randomUUID(), 'llama-3-fast', 'groq', 'llama3-8b-8192'));
    await run();
    expect(fake.models.has(D_GROQ)).toBe(true);
    state.models = state.models.filter((m) => m.id !== M_GROQ);
    fake.clearRequests();
    expect((await run()).status).toBe('ok');
    // Another model still uses the groq key: its credential stays.
    expect(fake.writes().map((w) => [w.method, w.path, w.body])).toEqual([['POST', '/model/delete', { id: D_GROQ }]]);
    expect(fake.models.has(D_GROQ)).toBe(false);
    expect(fake.credentials.has('keyplane-groq')).toBe(true);

    state.models = state.models.filter((m) => m.provider !== 'groq');
    fake.clearRequests();
    expect((await run()).status).toBe('ok');
    expect(fake.writes().map((w) => `${w.method} ${w.path}`)).toEqual(['POST /model/delete', 'DELETE /credentials/keyplane-groq']);
    expect(fake.credentials.has('keyplane-groq')).toBe(false);

    state.providers.find((p) => p.slug === 'anthropic')!.enabled = false;
    fake.clearRequests();
    expect((await run()).status).toBe('ok');
    expect(fake.writes().map((w) => `${w.method} ${w.path}`)).toEqual(['POST /model/delete', 'DELETE /credentials/keyplane-anthropic']);
    expect(fake.models.has(D_CLAUDE)).toBe(false);
    expect(fake.credentials.has('keyplane-anthropic')).toBe(false);
  });

  it('sends a key to no host its owner did not approve: the model and the credential go', async () => {
    await run();
    expect(fake.credentials.has('keyplane-anthropic')).toBe(true);
    // An operator points the provider elsewhere; no admin approved that host for the anthropic key.
    state.providers.find((p) => p.slug === 'anthropic')!.apiBase = 'https://collector.example/v1';
    fake.clearRequests();
    expect((await run()).status).toBe('ok');
    expect(fake.writes().map((w) => `${w.method} ${w.path}`)).toEqual(['POST /model/delete', 'DELETE /credentials/keyplane-anthropic']);
    expect(fake.models.has(D_CLAUDE)).toBe(false);
    expect(JSON.stringify(fake.requests)).not.toContain('collector.example');
    expect(JSON.stringify(fake.requests)).not.toContain(state.keys[1]!.value);
  });

  it('passes the admin\'s own litellm_params through, but never a literal secret', async () => {
    // An os.environ/ reference must name a platform key approved for the model's host.
    state.keys.push(key('vertex', 'VERTEX_CREDS', `vertex-${randomBytes(16).toString('hex')}`));
    state.approvals.push({ keyName: 'vertex', destination: 'https://api.openai.com' });
    state.models[0]!.litellmParams = { temperature: 0.2, api_version: '2024-06-01', aws_secret_access_key: 'literal-secret-value-123', vertex_credentials: 'os.environ/VERTEX_CREDS' };
    await run();
    expect(fake.models.get(D_OPENAI)!.litellm_params).toEqual({
      model: 'openai/gpt-4o-mini',
      api_base: 'https://api.openai.com/v1',
      rpm: 100,
      litellm_credential_name: 'keyplane-openai',
      temperature: 0.2,
      api_version: '2024-06-01',
      vertex_credentials: 'os.environ/VERTEX_CREDS',
    });
    expect(JSON.stringify(fake.requests)).not.toContain('literal-secret-value-123');
  });

  it('a value or field that disappears is removed by recreating the item, since a PATCH can only add', async () => {
    await run();
    // A credential as an older keyplane wrote it, with the provider's api_base beside the key.
    const old = fake.credentials.get('keyplane-openai')!;
    old.credential_values.api_base = 'https://api.openai.com/v1';
    (old.credential_info.keyplane_digests as Record<string, string>).api_base = 'sha256:0123456789abcdef0123456789abcdef';
    state.providers.find((p) => p.slug === 'openai')!.apiBase = null;
    fake.clearRequests();
    expect((await run()).status).toBe('ok');
    expect(fake.writes().map((w) => `${w.method} ${w.path}`)).toEqual([
      'DELETE /credentials/keyplane-openai',
      'POST /credentials',
      'POST /model/delete',
      'POST /model/new',
    ]);
    expect(fake.credentials.get('keyplane-openai')!.credential_values).toEqual({ api_key: state.keys[0]!.value });
    expect(fake.models.get(D_OPENAI)!.litellm_params).toEqual({ model: 'openai/gpt-4o-mini', rpm: 100, litellm_credential_name: 'keyplane-openai' });
    fake.clearRequests();
    expect((await run()).status).toBe('ok');
    expect(fake.writes()).toEqual([]);
  });

  it('leaves alone every credential and model keyplane did not create', async () => {
    const admin = new LitellmClient({ url: fake.url, masterKey: MASTER });
    await admin.createCredential({ credential_name: 'team-openai', credential_values: { api_key: 'sk-team-0123456789abcdef' }, credential_info: {} });
    await admin.createCredential({ credential_name: 'keyplane-legacy', credential_values: { api_key: 'sk-legacy-0123456789abcd' }, credential_info: { description: 'hand-made' } });
    await admin.createModel({ model_name: 'team-model', litellm_params: { model: 'openai/gpt-4o', litellm_credential_name: 'team-openai' }, model_info: { id: 'team-model-1' } });
    const before = JSON.stringify({ c: [...fake.credentials.entries()], m: [...fake.models.entries()] });
    fake.clearRequests();

    await run();
    state.models = [];
    state.providers.forEach((p) => (p.enabled = false));
    expect((await run()).status).toBe('ok');

    expect(fake.models.size).toBe(1);
    expect([...fake.credentials.keys()].sort()).toEqual(['keyplane-legacy', 'team-openai']);
    expect(JSON.stringify({ c: [...fake.credentials.entries()], m: [...fake.models.entries()] })).toBe(before);
    expect(fake.writes().length).toBeGreaterThan(0);
    expect(fake.writes().filter((w) => /team-openai|team-model|keyplane-legacy|config-/.test(`${w.path} ${JSON.stringify(w.body)}`))).toEqual([]);
  });

  it('models that carry a copied keyplane_id are left alone and reported; keyplane creates, keeps and deletes only its own', async () => {
    const admin = new LitellmClient({ url: fake.url, masterKey: MASTER });
    // As LiteLLM's UI duplicates a model: its model_info (keyplane's marks too) under a new id.
    for (const id of ['dup-a', 'dup-b']) {
      await admin.createModel({ model_name: 'old-name', litellm_params: { model: 'openai/gpt-3.5-turbo' }, model_info: { id, keyplane_id: M_OPENAI, keyplane_digests: {} } });
    }
    const copies = () => JSON.stringify(['dup-a', 'dup-b'].map((id) => fake.models.get(id)));
    const before = copies();
    fake.clearRequests();
    const first = await run();
    expect(first.status).toBe('ok');
    expect(first.error).toMatch(/^2 notes: model dup-a \(old-name\) carries keyplane_id \S+ but keyplane did not create it: left alone; model dup-b/);
    expect(first.targets[0]!.error).toBe(first.error);
    expect(fake.writes().filter((w) => w.path.startsWith('/model/')).map((w) => `${w.method} ${w.path}`)).toEqual(['POST /model/new', 'POST /model/new']);
    expect(fake.models.get(D_OPENAI)).toMatchObject({ model_name: 'gpt-4o-mini', litellm_params: { model: 'openai/gpt-4o-mini', litellm_credential_name: 'keyplane-openai' } });
    expect(copies()).toBe(before);

    // Nothing changed: no write, whatever the copies say.
    fake.clearRequests();
    expect((await run()).status).toBe('ok');
    expect(fake.writes()).toEqual([]);

    // keyplane's own goes with its row; the copies stay as they were.
    state.models = state.models.filter((m) => m.id !== M_OPENAI);
    fake.clearRequests();
    expect((await run()).status).toBe('ok');
    expect(fake.writes().map((w) => [w.method, w.path, w.body])).toEqual([
      ['POST', '/model/delete', { id: D_OPENAI }],
      ['DELETE', '/credentials/keyplane-openai', undefined],
    ]);
    expect(copies()).toBe(before);
  });

  it('a credential with keyplane\'s name that keyplane did not create is a conflict: reported, not touched, not used', async () => {
    const admin = new LitellmClient({ url: fake.url, masterKey: MASTER });
    await admin.createCredential({ credential_name: 'keyplane-openai', credential_values: { api_key: 'sk-foreign-0123456789abcd' }, credential_info: {} });
    fake.clearRequests();
    const result = await run();
    expect(result.status).toBe('failed');
    expect(result.error).toMatch(/keyplane-openai that keyplane did not create/);
    expect(result.targets[0]!.error).toBe(result.error);
    expect(fake.credentials.get('keyplane-openai')!.credential_values).toEqual({ api_key: 'sk-foreign-0123456789abcd' });
    expect(fake.models.has(D_OPENAI)).toBe(false);
    expect(fake.models.has(D_CLAUDE)).toBe(true);
  });

  it('a LiteLLM without a database is a clear failure that suggests docker or command', async () => {
    const noDb = await FakeLitellm.start({ masterKey: MASTER, database: false });
    try {
      const result = await run(reloader({ url: noDb.url }));
      expect(result.status).toBe('failed');
      expect(result.error).toMatch(/LiteLLM has no database/);
      expect(result.error).toMatch(/KEYPLANE_RELOAD=docker/);
      expect(result.error).toMatch(/KEYPLANE_RELOAD=command/);
      expect(result.targets).toEqual([expect.objectContaining({ target: noDb.url, status: 'failed', error: result.error })]);
      expect(noDb.writes()).toEqual([]);
    } finally {
      await noDb.stop();
    }
  });

  it('the client recognises LiteLLM\'s no-database answers, including the ones sent with status 200', async () => {
    const noDb = await FakeLitellm.start({ masterKey: MASTER, database: false });
    const client = new LitellmClient({ url: noDb.url, masterKey: MASTER });
    const secret = `sk-never-shown-${randomBytes(8).toString('hex')}`;
    try {
      expect(await client.readiness()).toMatchObject({ db: 'Not connected', litellmVersion: '1.81.15' });
      expect(await client.liveliness()).toBe(true);
      for (const attempt of [
        () => client.createCredential({ credential_name: 'x', credential_values: { api_key: secret }, credential_info: {} }),
        () => client.patchCredential('x', { credential_values: { api_key: secret }, credential_info: {} }),
        () => client.deleteCredential('x'),
        () => client.createModel({ model_name: 'm', litellm_params: { model: 'openai/m' }, model_info: {} }),
        () => client.updateModel('id-1', { model_name: 'm' }),
        () => client.deleteModel('id-1'),
      ]) {
        const err = await attempt().then(
          () => undefined,
          (e: unknown) => e,
        );
        expect(err).toBeInstanceOf(LitellmApiError);
        expect((err as LitellmApiError).kind).toBe('no-database');
        expect((err as Error).message).not.toContain(secret);
        expect((err as Error).message).not.toContain(MASTER);
      }
    } finally {
      await noDb.stop();
    }
  });

  it('a wrong master key (401) is a clear failure that never shows the key', async () => {
    const wrong = `sk-wrong-${randomBytes(12).toString('hex')}Zq9X`;
    const result = await run(reloader({ masterKey: wrong }));
    expect(result.status).toBe('failed');
    expect(result.error).toMatch(/refused the master key \(HTTP 401\)/);
    expect(result.error).toMatch(/KEYPLANE_LITELLM_MASTER_KEY/);
    expect(result.error).not.toContain(wrong);
    expect(result.error).not.toContain('Zq9X');
    expect(logs()).not.toContain(wrong);
    expect(logs()).not.toContain('Zq9X');
    expect(fake.writes()).toEqual([]);
  });

  it('uses the stored litellm_master_key (whatever its env var) when none is configured, and fails clearly when there is neither', async () => {
    expect((await run()).status).toBe('ok');
    const renamed = { ...state, keys: state.keys.map((k) => (k.name === 'litellm_master_key' ? { ...k, envVar: 'PROXY_ADMIN_KEY' } : k)) };
    expect((await reloader().reload(request(renamed, revision++, {}))).status).toBe('ok');
    const without = { ...state, keys: state.keys.filter((k) => k.name !== 'litellm_master_key') };
    const none = await reloader().reload(request(without, revision++, { LITELLM_MASTER_KEY: MASTER }));
    expect(none.status).toBe('failed');
    expect(none.error).toMatch(/no LiteLLM master key: set KEYPLANE_LITELLM_MASTER_KEY/);
  });

  it('reports LiteLLM that keeps models out of its database', async () => {
    const noStore = await FakeLitellm.start({ masterKey: MASTER, storeModelInDb: false });
    try {
      const result = await run(reloader({ url: noStore.url }));
      expect(result.status).toBe('failed');
      expect(result.error).toMatch(/set STORE_MODEL_IN_DB=True/);
      // The refused creates are not keyplane's: only the credentials LiteLLM did store are in the ledger.
      expect(await ledger(db)).toEqual(['credential:keyplane-anthropic', 'credential:keyplane-openai']);
    } finally {
      await noStore.stop();
    }
  });

  it('an unreachable or silent LiteLLM is a failed result, not a throw', async () => {
    const closed = createServer();
    await new Promise<void>((r) => closed.listen(0, '127.0.0.1', () => r()));
    const port = (closed.address() as AddressInfo).port;
    await new Promise<void>((r) => closed.close(() => r()));
    const unreachable = await run(reloader({ url: `http://127.0.0.1:${port}` }));
    expect(unreachable.status).toBe('failed');
    expect(unreachable.error).toMatch(/cannot reach LiteLLM at http:\/\/127\.0\.0\.1:\d+ \(ECONNREFUSED\)/);
    expect(await new LitellmClient({ url: `http://127.0.0.1:${port}` }).liveliness()).toBe(false);

    const held: Array<import('node:http').ServerResponse> = [];
    const silent: Server = createServer((_req, res) => held.push(res));
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', () => r()));
    try {
      const started = Date.now();
      const result = await run(reloader({ url: `http://127.0.0.1:${(silent.address() as AddressInfo).port}`, timeoutMs: 200 }));
      expect(result.status).toBe('failed');
      expect(result.error).toMatch(/did not answer within 200 ms/);
      expect(Date.now() - started).toBeLessThan(5_000);
    } finally {
      held.forEach((res) => res.destroy());
      silent.closeAllConnections();
      await new Promise<void>((r) => silent.close(() => r()));
    }
  });

  it('no secret reaches a log line or a result', async () => {
    await run();
    setKey(state, 'openai', `sk-openai-${randomBytes(16).toString('hex')}`);
    const ok = await run();
    const failed = await run(reloader({ masterKey: `sk-bad-${randomBytes(12).toString('hex')}` }));
    for (const s of [...secretsOf(state), MASTER]) {
      expect(logs()).not.toContain(s);
      expect(JSON.stringify([ok, failed])).not.toContain(s);
    }
  });
});

describe('KEYPLANE_RELOAD=litellm-api: the running keyplane keeps LiteLLM\'s database in step', () => {
  let t: TestApp;
  let fake: FakeLitellm;
  const KEY1 = `sk-or-v1-${randomBytes(16).toString('hex')}`;
  const KEY2 = `sk-or-v1-${randomBytes(16).toString('hex')}`;

  beforeAll(async () => {
    fake = await FakeLitellm.start({ masterKey: MASTER });
    t = await startTestApp({ env: { KEYPLANE_RELOAD: 'litellm-api', KEYPLANE_LITELLM_URL: fake.url, KEYPLANE_LITELLM_MASTER_KEY: MASTER } });
  });
  afterAll(async () => {
    await t.close();
    await fake.stop();
  });

  const reloaded = (check: () => boolean) => t.kp.events.waitFor('reload:done', () => check(), 15_000);

  it('a key used by a new model (which changes no file) becomes a credential and a DB model; a rotation one PATCH', async () => {
    // A key alone makes no credential: LiteLLM gets only keys that an eligible deployment uses.
    const stored = reloaded(() => true);
    await t.api().put('/api/v1/admin/platform-keys/openrouter').send({ api_key: KEY1 }).expect(200);
    await stored;
    expect(fake.credentials.has('keyplane-openrouter')).toBe(false);

    let id = '';
    const modelAdded = reloaded(() => fake.models.has(litellmModelId(id, 'openrouter')));
    const created = await t.api().post('/api/v1/admin/models').send({ model_name: 'balanced', provider: 'openrouter', model: 'openai/gpt-4o-mini', rpm: 60 }).expect(201);
    id = created.body.id;
    await modelAdded;
    expect(fake.credentials.get('keyplane-openrouter')!.credential_values).toEqual({ api_key: KEY1 });
    expect(fake.models.get(litellmModelId(id, 'openrouter'))!.litellm_params).toMatchObject({ model: 'openrouter/openai/gpt-4o-mini', rpm: 60, litellm_credential_name: 'keyplane-openrouter' });
    const config = readFileSync(path.join(t.settings.outputDir, 'config.yaml'), 'utf8');
    expect(config).not.toContain('gpt-4o-mini');

    await t.kp.reloads!.whenIdle();
    fake.clearRequests();
    const rotated = reloaded(() => fake.credentials.get('keyplane-openrouter')?.credential_values.api_key === KEY2);
    await t.api().put('/api/v1/admin/platform-keys/openrouter').send({ api_key: KEY2 }).expect(200);
    await rotated;
    expect(fake.writes().map((w) => `${w.method} ${w.path}`)).toEqual(['PATCH /credentials/keyplane-openrouter']);
    expect(fake.maskedEchoes).toBe(0);

    const status = await t.api().get('/api/v1/admin/sync').expect(200);
    expect(status.body.last_reload).toMatchObject({ reloader: 'litellm-api', last: { status: 'ok' } });
    for (const s of [KEY1, KEY2, MASTER]) {
      expect(t.logs()).not.toContain(s);
      expect(JSON.stringify(status.body)).not.toContain(s);
    }
  });
});
