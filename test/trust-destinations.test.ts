import { readFileSync } from 'node:fs';
import path from 'node:path';
import request from 'supertest';
import YAML from 'yaml';
import type { DesiredState } from '../src/sync/desired-state';
import { render, RenderRefused } from '../src/sync/renderer';
import { startTestApp, type TestApp } from './helpers/app';
import { startFakeProvider, type FakeProvider } from './helpers/fake-provider';

/**
 * Issue 8, item 1: an operator can make keyplane (its prober, `validate`, or the config it renders)
 * send an existing key only where an admin approved it.
 */
describe('key destinations: a key goes only where an admin sent it', () => {
  let t: TestApp;
  let good: FakeProvider;
  let evil: FakeProvider;
  let operator: string;
  let viewer: string;
  const OPENAI = 'sk-openai-dest-test-0123456789';
  const MASTER = 'sk-master-dest-test-0123456789';
  const CORP = 'corp-dest-test-0123456789';

  const as = (token: string) => ({
    get: (p: string) => request(t.kp.url!).get(p).set('Authorization', `Bearer ${token}`),
    put: (p: string) => request(t.kp.url!).put(p).set('Authorization', `Bearer ${token}`),
    post: (p: string) => request(t.kp.url!).post(p).set('Authorization', `Bearer ${token}`),
    del: (p: string) => request(t.kp.url!).delete(p).set('Authorization', `Bearer ${token}`),
  });
  const config = (): Record<string, unknown> => YAML.parse(readFileSync(path.join(t.settings.outputDir, 'config.yaml'), 'utf8')) as Record<string, unknown>;
  const deployments = (): Array<{ model_name: string; litellm_params: Record<string, unknown> }> =>
    (config().model_list as Array<{ model_name: string; litellm_params: Record<string, unknown> }>) ?? [];
  const sync = async (): Promise<Record<string, unknown>> => (await t.api().post('/api/v1/admin/sync').send({}).expect(200)).body;

  beforeAll(async () => {
    good = await startFakeProvider();
    evil = await startFakeProvider();
    t = await startTestApp();
    operator = (await t.kp.tokens.create('op', 'operator', 'test')).token;
    viewer = (await t.kp.tokens.create('view', 'viewer', 'test')).token;
    await t.api().put('/api/v1/admin/platform-keys/openai').send({ api_key: OPENAI }).expect(200);
    await t.api().put('/api/v1/admin/platform-keys/litellm_master_key').send({ api_key: MASTER }).expect(200);
    // The admin binds a corporate gateway: this approves (corp, good's origin).
    await t.api().put('/api/v1/admin/providers/corp').send({ kind: 'openai', api_base: good.base('corp'), key_name: 'corp' }).expect(201);
    await t.api().put('/api/v1/admin/platform-keys/corp').send({ api_key: CORP }).expect(200);
  });
  afterAll(async () => {
    await t.close();
    await good.close();
    await evil.close();
  });

  it("an operator cannot point a provider's api_base at another host, nor its key at another key", async () => {
    const moved = await as(operator).put('/api/v1/admin/providers/openai').send({ kind: 'openai', api_base: evil.base('x') }).expect(403);
    expect(moved.body).toMatchObject({ type: expect.stringMatching(/destination-not-approved$/), status: 403 });
    expect(moved.body.errors).toEqual([{ field: 'api_base', rule: expect.stringContaining(`platform key openai to ${new URL(evil.url).origin}`) }]);
    const stolen = await as(operator).put('/api/v1/admin/providers/corp').send({ kind: 'openai', key_name: 'openai' }).expect(403);
    expect(stolen.body.errors[0]).toMatchObject({ field: 'key_name', rule: expect.stringContaining('platform key openai') });
    const created = await as(operator).put('/api/v1/admin/providers/mine').send({ kind: 'openai', api_base: evil.base('mine'), key_name: 'openai' }).expect(403);
    expect(created.body.errors[0].field).toBe('api_base');
    // Nothing was stored.
    expect((await t.api().get('/api/v1/admin/providers/openai').expect(200)).body.api_base).toBe('https://api.openai.com/v1');
    await t.api().get('/api/v1/admin/providers/mine').expect(404);
    // The same change made by an admin is an approval, and recorded as one.
    await t.api().put('/api/v1/admin/providers/mine').send({ kind: 'openai', api_base: good.base('mine'), key_name: 'corp' }).expect(201);
    const audit = await t.api().get('/api/v1/admin/audit?target=provider/mine').expect(200);
    expect(audit.body.items[0].details.approved_destinations).toBeUndefined(); // (corp, good) was approved already
    // Switching a provider off or on moves no key: an operator may.
    await as(operator).put('/api/v1/admin/providers/mine').send({ kind: 'openai', active: false }).expect(200);
  });

  it('reserved keys are never a provider key, for anyone', async () => {
    for (const token of [t.adminToken, operator]) {
      const res = await as(token).put('/api/v1/admin/providers/leak').send({ kind: 'openai', key_name: 'litellm_master_key' }).expect(400);
      expect(res.body.errors).toEqual([{ field: 'key_name', rule: expect.stringMatching(/LiteLLM's own key/) }]);
      const salt = await as(token).put('/api/v1/admin/providers/leak').send({ kind: 'openai', key_name: 'litellm_salt_key' }).expect(400);
      expect(salt.body.errors[0].field).toBe('key_name');
    }
  });

  it('an operator cannot send a key elsewhere through a model: api_base, os.environ/ references, nesting', async () => {
    const base = { model_name: 'gpt-4o', provider: 'openai', model: 'gpt-4o' };
    const viaBase = await as(operator).post('/api/v1/admin/models').send({ ...base, api_base: evil.base('m') }).expect(403);
    expect(viaBase.body.errors).toEqual([{ field: 'api_base', rule: expect.stringContaining('platform key openai') }]);
    // Another key pulled into a deployment goes to that deployment's host: needs its own approval.
    const viaRef = await as(operator).post('/api/v1/admin/models').send({ ...base, provider: 'corp', litellm_params: { api_version: 'os.environ/OPENAI_API_KEY' } }).expect(403);
    expect(viaRef.body.errors).toEqual([{ field: 'litellm_params.api_version', rule: expect.stringContaining('platform key openai') }]);
    const master = await as(t.adminToken).post('/api/v1/admin/models').send({ ...base, litellm_params: { api_version: 'os.environ/LITELLM_MASTER_KEY' } }).expect(400);
    expect(master.body.errors).toEqual([{ field: 'litellm_params.api_version', rule: expect.stringMatching(/LiteLLM's own key/) }]);
    const processEnv = await as(operator).post('/api/v1/admin/models').send({ ...base, litellm_params: { api_version: 'os.environ/DATABASE_URL' } }).expect(400);
    expect(processEnv.body.errors[0].rule).toMatch(/DATABASE_URL is none/);
    const nested = await as(operator).post('/api/v1/admin/models').send({ ...base, litellm_params: { extra_body: { k: 'os.environ/OPENAI_API_KEY' } }, model_info: { x: 'os.environ/OPENAI_API_KEY' } }).expect(400);
    expect(nested.body.errors.map((e: { field: string }) => e.field).sort()).toEqual(['litellm_params.extra_body.k', 'model_info.x']);
    // Within what an admin approved, an operator edits models freely.
    const ok = await as(operator).post('/api/v1/admin/models').send({ ...base, litellm_params: { timeout: 30 } }).expect(201);
    // Moving an approved model to another provider makes a new pair: refused too.
    const moved = await as(operator).put(`/api/v1/admin/models/${ok.body.id}`).send({ ...base, provider: 'corp', api_base: 'https://api.openai.com/v1' }).expect(403);
    expect(moved.body.errors[0].rule).toContain('platform key corp to https://api.openai.com');
  });

  it('parameters that would move a request elsewhere are refused for everyone, and left out when written around the API', async () => {
    const base = { model_name: 'gpt-4o', provider: 'openai', model: 'gpt-4o' };
    for (const token of [operator, t.adminToken]) {
      const res = await as(token)
        .post('/api/v1/admin/models')
        .send({ ...base, litellm_params: { base_url: evil.base('b'), litellm_credential_name: 'admins-cred', custom_llm_provider: 'mistral', aws_bedrock_runtime_endpoint: evil.base('c'), temperature: 0.1 } })
        .expect(400);
      expect(res.body.errors.map((e: { field: string }) => e.field).sort()).toEqual([
        'litellm_params.aws_bedrock_runtime_endpoint',
        'litellm_params.base_url',
        'litellm_params.custom_llm_provider',
        'litellm_params.litellm_credential_name',
      ]);
    }
    // The openai provider's api_base is its kind's default, so keyplane renders none: a row's own would go through.
    const id = (await t.db.pool.query<{ id: string }>("INSERT INTO models (id, model_name, provider, model, litellm_params) VALUES (gen_random_uuid(), 'steered', 'openai', 'gpt-4o', $1) RETURNING id", [{ api_base: evil.base('s') }])).rows[0]!.id;
    const status = await sync();
    expect(status.skipped).toContainEqual({ id, model_name: 'steered', provider: 'openai', reason: 'destination_param', detail: 'api_base' });
    expect(JSON.stringify(config())).not.toContain(new URL(evil.url).origin);
    await t.db.pool.query('DELETE FROM models WHERE id = $1', [id]);
  });

  it("renaming an existing key's env var is an admin's call (LiteLLM reads some variables on its own)", async () => {
    const res = await as(operator).put('/api/v1/admin/platform-keys/openai').send({ api_key: OPENAI, env_var: 'ANTHROPIC_API_KEY' }).expect(403);
    expect(res.body.errors).toEqual([{ field: 'env_var', rule: expect.stringMatching(/needs the admin role/) }]);
    expect((await t.api().get('/api/v1/admin/platform-keys/openai').expect(200)).body.env_var).toBe('OPENAI_API_KEY');
    // A new key of the operator's own, with its own variable, sends no existing key anywhere.
    await as(operator).put('/api/v1/admin/platform-keys/opkey').send({ api_key: 'op-own-key-0123456789', env_var: 'OPKEY_SECRET' }).expect(200);
    await as(t.adminToken).put('/api/v1/admin/platform-keys/opkey').send({ api_key: 'op-own-key-0123456789', env_var: 'OPKEY_TOKEN' }).expect(200);
  });

  it('a pair written around the API is neither rendered, nor probed, nor used by validate', async () => {
    // A row an operator could not have written through the API (or an approval revoked since).
    await t.db.pool.query("INSERT INTO providers (slug, kind, api_base, key_name) VALUES ('sneaky', 'openai', $1, 'openai')", [evil.base('sneaky')]);
    const id = (await t.db.pool.query<{ id: string }>("INSERT INTO models (id, model_name, provider, model) VALUES (gen_random_uuid(), 'sneaky-model', 'sneaky', 'gpt-4o') RETURNING id")).rows[0]!.id;
    const status = await sync();
    expect(status.skipped).toContainEqual({ id, model_name: 'sneaky-model', provider: 'sneaky', reason: 'host_not_approved', detail: new URL(evil.url).origin });
    expect(deployments().map((d) => d.model_name)).not.toContain('sneaky-model');
    const round = await as(operator).post('/api/v1/admin/llm/health/check').expect(200);
    const sneaky = round.body.providers.find((p: { slug: string }) => p.slug === 'sneaky');
    expect(sneaky).toMatchObject({ status: 'unknown', observed: { status: 'unknown', reason: 'not_approved' } });
    await as(operator).put('/api/v1/admin/platform-keys/openai').send({ api_key: 'sk-openai-dest-test-rotated-42', validate: true }).expect(200);
    expect(evil.requests).toEqual([]);
    // The approved gateway was probed, with its own key only.
    expect(good.requests.length).toBeGreaterThan(0);
    expect(new Set(good.requests.map((r) => r.key))).toEqual(new Set([CORP]));
  });

  it('allowed-hosts: viewers read it, only admins change it; revoking takes deployments out at the next render', async () => {
    await as(t.adminToken).post('/api/v1/admin/models').send({ model_name: 'corp-model', provider: 'corp', model: 'gpt-4o-mini' }).expect(201);
    await sync();
    expect(deployments().map((d) => d.model_name)).toContain('corp-model');
    const shown = await as(viewer).get('/api/v1/admin/platform-keys/corp/allowed-hosts').expect(200);
    expect(shown.body).toMatchObject({ name: 'corp', allowed_hosts: [new URL(good.url).origin] });
    await as(operator).put('/api/v1/admin/platform-keys/corp/allowed-hosts').send({ allowed_hosts: [] }).expect(403);
    const bad = await as(t.adminToken).put('/api/v1/admin/platform-keys/corp/allowed-hosts').send({ allowed_hosts: ['https://x.example/v1', 'ftp://x'] }).expect(400);
    expect(bad.body.errors.map((e: { field: string }) => e.field)).toEqual(['allowed_hosts.0', 'allowed_hosts.1']);
    await as(t.adminToken).put('/api/v1/admin/platform-keys/litellm_master_key/allowed-hosts').send({ allowed_hosts: ['https://x.example'] }).expect(400);
    const revoked = await as(t.adminToken).put('/api/v1/admin/platform-keys/corp/allowed-hosts').send({ allowed_hosts: [] }).expect(200);
    expect(revoked.body.allowed_hosts).toEqual([]);
    const status = await sync();
    expect(status.skipped).toContainEqual(expect.objectContaining({ model_name: 'corp-model', reason: 'host_not_approved' }));
    expect(deployments().map((d) => d.model_name)).not.toContain('corp-model');
    // Now even the old binding is unapproved for an operator; the admin approves it again explicitly.
    await as(operator).put('/api/v1/admin/providers/corp').send({ kind: 'openai', api_base: good.base('corp2') }).expect(403);
    await as(t.adminToken).put('/api/v1/admin/platform-keys/corp/allowed-hosts').send({ allowed_hosts: [`${new URL(good.url).origin}/`] }).expect(200);
    await as(operator).put('/api/v1/admin/providers/corp').send({ kind: 'openai', api_base: good.base('corp2') }).expect(200);
    await sync();
    expect(deployments().map((d) => d.model_name)).toContain('corp-model');
    const audit = await t.api().get('/api/v1/admin/audit?action=platform_key.allowed_hosts').expect(200);
    expect(audit.body.items.map((i: { details: unknown }) => i.details)).toContainEqual({ added: [], removed: [new URL(good.url).origin] });
  });
});

describe("LiteLLM's master key fails closed (item 3)", () => {
  let t: TestApp;
  afterEach(async () => {
    await t?.close();
  });

  it('refuses to delete the master key while the config relies on it, and never renders one without it', async () => {
    t = await startTestApp();
    const bad = await t.api().put('/api/v1/admin/platform-keys/litellm_master_key').send({ api_key: 'not-sk-0123456789' }).expect(400);
    expect(bad.body.errors).toEqual([{ field: 'api_key', rule: expect.stringMatching(/must start with sk-/) }]);
    await t.api().put('/api/v1/admin/platform-keys/litellm_master_key').send({ api_key: 'sk-master-closed-0123456789' }).expect(200);
    await t.api().post('/api/v1/admin/sync').send({}).expect(200);
    const cfg = (): string => readFileSync(path.join(t.settings.outputDir, 'config.yaml'), 'utf8');
    expect(YAML.parse(cfg()).general_settings.master_key).toBe('os.environ/LITELLM_MASTER_KEY');
    const refused = await t.api().delete('/api/v1/admin/platform-keys/litellm_master_key').expect(409);
    expect(refused.body.detail).toMatch(/without authentication/);
    await t.api().get('/api/v1/admin/platform-keys/litellm_master_key').expect(200);
    // Gone around the API: the render fails, names why, and the live config keeps its master key.
    const before = cfg();
    await t.db.pool.query("DELETE FROM platform_keys WHERE name = 'litellm_master_key'");
    const failed = await t.api().post('/api/v1/admin/sync').send({}).expect(422);
    expect(failed.body).toMatchObject({ stage: 'render', detail: expect.stringMatching(/without authentication/) });
    expect(cfg()).toBe(before);
  });

  it('with general_settings.master_key: null in the base config, auth is off on purpose and the key may go', async () => {
    const { mkdtempSync, writeFileSync } = await import('node:fs');
    const os = await import('node:os');
    const dir = mkdtempSync(path.join(os.tmpdir(), 'kp-base-'));
    const file = path.join(dir, 'base.yaml');
    writeFileSync(file, 'general_settings:\n  master_key: null\n');
    t = await startTestApp({ env: { KEYPLANE_BASE_CONFIG: file } });
    await t.api().put('/api/v1/admin/platform-keys/litellm_master_key').send({ api_key: 'sk-master-off-0123456789' }).expect(200);
    await t.api().post('/api/v1/admin/sync').send({}).expect(200);
    await t.api().delete('/api/v1/admin/platform-keys/litellm_master_key').expect(204);
    await t.api().post('/api/v1/admin/sync').send({}).expect(200);
    const doc = YAML.parse(readFileSync(path.join(t.settings.outputDir, 'config.yaml'), 'utf8'));
    expect(doc.general_settings).toEqual({ master_key: null });
  });
});

describe('data the API accepts never stalls sync (item 7)', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp();
  });
  afterAll(async () => {
    await t.close();
  });

  it('a key value equal to a clear-text string, or a string equal to a key value, is refused; a row that holds one is left out by name', async () => {
    const KEY = 'sk-or-v1-stall-test-0123456789';
    await t.api().put('/api/v1/admin/platform-keys/openrouter').send({ api_key: KEY }).expect(200);
    await t.api().post('/api/v1/admin/models').send({ model_name: 'router-llama', provider: 'openrouter', model: 'meta-llama/llama-3-70b' }).expect(201);
    const asModelName = await t.api().put('/api/v1/admin/platform-keys/openrouter').send({ api_key: 'router-llama' }).expect(400);
    expect(asModelName.body.errors).toEqual([{ field: 'api_key', rule: expect.stringMatching(/equals a model field/) }]);
    // In a burst of rotations written together, the one that clashes fails alone.
    const burst = await Promise.all(
      Array.from({ length: 12 }, (_, i) => t.api().put('/api/v1/admin/platform-keys/openrouter').send({ api_key: i === 5 ? 'router-llama' : `sk-or-v1-burst-${i}-0123456789` })),
    );
    expect(burst.map((r) => r.status)).toEqual(Array.from({ length: 12 }, (_, i) => (i === 5 ? 400 : 200)));
    const versions = burst.filter((r) => r.status === 200).map((r) => r.body.version as number).sort((a, b) => a - b);
    expect(versions).toEqual(Array.from({ length: 11 }, (_, i) => versions[0]! + i));
    await t.api().put('/api/v1/admin/platform-keys/openrouter').send({ api_key: KEY }).expect(200);
    const inParams = await t.api().post('/api/v1/admin/models').send({ model_name: 'm2', provider: 'openrouter', model: 'x', model_info: { note: KEY } }).expect(400);
    expect(inParams.body.errors).toEqual([{ field: 'model_info.note', rule: expect.stringMatching(/value of a platform key/) }]);
    expect(JSON.stringify(inParams.body)).not.toContain(KEY);
    // Containment is no test (it would tell whether a guess is part of a key): a URL around the value passes.
    await t.api().post('/api/v1/admin/models').send({ model_name: 'm3', provider: 'openrouter', model: 'x', model_info: { note: `prefix-${KEY.slice(0, 12)}` } }).expect(201);
    // Written around the API: the render still succeeds, leaves that row out and names it.
    const id = (await t.db.pool.query<{ id: string }>("INSERT INTO models (id, model_name, provider, model, model_info) VALUES (gen_random_uuid(), 'leaky', 'openrouter', 'x', $1) RETURNING id", [{ note: KEY }])).rows[0]!.id;
    const status = (await t.api().post('/api/v1/admin/sync').send({}).expect(200)).body;
    expect(status.skipped).toContainEqual({ id, model_name: 'leaky', provider: 'openrouter', reason: 'holds_secret' });
    const text = readFileSync(path.join(t.settings.outputDir, 'config.yaml'), 'utf8');
    expect(text).not.toContain(KEY);
    expect(text).toContain('router-llama');
    // Later changes keep rendering.
    await t.api().put('/api/v1/admin/platform-keys/openrouter').send({ api_key: 'sk-or-v1-stall-test-rotated-99' }).expect(200);
    await t.api().post('/api/v1/admin/sync').send({}).expect(200);
    expect(readFileSync(path.join(t.settings.outputDir, 'litellm.env'), 'utf8')).toContain('sk-or-v1-stall-test-rotated-99');
  });
});

describe('the renderer alone', () => {
  const state = (): DesiredState => JSON.parse(readFileSync(path.join(__dirname, 'fixtures', 'sync', 'state.json'), 'utf8')) as DesiredState;

  it('refuses to render LiteLLM without its master key once one existed, unless the base config turns auth off', () => {
    const s = state();
    expect(render(s, {}, { modelsInConfig: true }).usesMasterKey).toBe(true);
    s.keys = s.keys.filter((k) => k.name !== 'litellm_master_key');
    expect(render(s, {}, { modelsInConfig: true }).usesMasterKey).toBe(false);
    s.authRequired = true;
    expect(() => render(s, {}, { modelsInConfig: true })).toThrow(RenderRefused);
    expect(render(s, { general_settings: { master_key: null } }, { modelsInConfig: true }).configYaml).toContain('master_key: null');
  });

  it('leaves out, by name, every deployment whose key would go somewhere not approved', () => {
    const s = state();
    s.approvals = s.approvals.filter((a) => a.destination !== 'https://eu.api.openai.com');
    const r = render(s, {}, { modelsInConfig: true });
    expect(r.skipped).toContainEqual({ id: '00000000-0000-4000-8000-000000000007', model_name: 'o1', provider: 'openai', reason: 'host_not_approved', detail: 'https://eu.api.openai.com' });
    expect(r.configYaml).not.toContain('eu.api.openai.com');
    // A reserved key is never a provider's key, even in a row written around the API.
    s.providers.find((p) => p.slug === 'groq')!.keyName = 'litellm_master_key';
    s.approvals.push({ keyName: 'litellm_master_key', destination: 'https://api.groq.com' });
    expect(render(s, {}, { modelsInConfig: true }).skipped).toContainEqual(expect.objectContaining({ model_name: 'llama-70b', reason: 'reserved_key' }));
  });
});
