import { startTestApp, type TestApp } from './helpers/app';

describe('providers, models and routing', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp();
  });
  afterAll(async () => {
    await t.close();
  });

  it('seeds the seven common providers with their LiteLLM prefixes and API bases, inactive until they have a key', async () => {
    const res = await t.api().get('/api/v1/admin/providers').expect(200);
    const bySlug = Object.fromEntries(res.body.items.map((p: { slug: string }) => [p.slug, p]));
    expect(Object.keys(bySlug).sort()).toEqual(['anthropic', 'fireworks', 'gemini', 'groq', 'openai', 'openrouter', 'together']);
    expect(bySlug.together).toMatchObject({ kind: 'together_ai', api_base: 'https://api.together.xyz/v1', key_name: 'together', active: false, has_key: false, enabled: true });
    expect(bySlug.fireworks.kind).toBe('fireworks_ai');
    expect(bySlug.gemini.api_base).toMatch(/generativelanguage\.googleapis\.com/);
    await t.api().put('/api/v1/admin/platform-keys/groq').send({ api_key: 'gsk_groqkey-123456789' }).expect(200);
    const groq = await t.api().get('/api/v1/admin/providers/groq').expect(200);
    expect(groq.body).toMatchObject({ active: true, has_key: true });
  });

  it('PUT creates (201) or updates (200) a provider; fields left out are kept', async () => {
    const c = await t.api().put('/api/v1/admin/providers/local-vllm').send({ kind: 'openai', api_base: 'http://127.0.0.1:8000/v1', key_name: 'vllm' }).expect(201);
    expect(c.body).toMatchObject({ slug: 'local-vllm', kind: 'openai', key_name: 'vllm', active: false });
    const u = await t.api().put('/api/v1/admin/providers/local-vllm').send({ kind: 'openai', active: false }).expect(200);
    expect(u.body).toMatchObject({ api_base: 'http://127.0.0.1:8000/v1', key_name: 'vllm', enabled: false });
    const d = await t.api().put('/api/v1/admin/providers/dflt').send({ kind: 'ollama' }).expect(201);
    expect(d.body.key_name).toBe('dflt');
  });

  it('provider input is validated; health is a reserved slug', async () => {
    const bad = await t.api().put('/api/v1/admin/providers/x').send({ kind: 'Not A Kind', api_base: 'ftp://x', active: 'yes' }).expect(400);
    const fields = bad.body.errors.map((e: { field: string }) => e.field).sort();
    expect(fields).toEqual(['active', 'api_base', 'kind']);
    const reserved = await t.api().put('/api/v1/admin/providers/health').send({ kind: 'openai' });
    expect(reserved.status).toBe(400);
  });

  it('a model referencing an unknown provider is a 400 naming the field', async () => {
    const res = await t.api().post('/api/v1/admin/models').send({ model_name: 'gpt-4o', provider: 'nowhere', model: 'gpt-4o' }).expect(400);
    expect(res.body.errors).toEqual([{ field: 'provider', rule: expect.stringMatching(/existing provider/) }]);
  });

  it('a raw key inside litellm_params is refused; os.environ references to platform keys are allowed', async () => {
    const res = await t
      .api()
      .post('/api/v1/admin/models')
      .send({ model_name: 'm', provider: 'groq', model: 'llama-3.1-8b-instant', litellm_params: { api_key: 'sk-raw-secret-123456', aws_secret_access_key: 'abc' } })
      .expect(400);
    expect(res.body.errors.map((e: { field: string }) => e.field).sort()).toEqual(['litellm_params.api_key', 'litellm_params.aws_secret_access_key']);
    expect(JSON.stringify(res.body)).not.toContain('sk-raw-secret-123456');
    const model = { model_name: 'm', provider: 'groq', model: 'llama-3.1-8b-instant', litellm_params: { aws_secret_access_key: 'os.environ/AWS_SECRET', temperature: 0.2 } };
    // A reference must name a platform key's env var: LiteLLM's own environment (DATABASE_URL, ...) is not a key store.
    const unknown = await t.api().post('/api/v1/admin/models').send(model).expect(400);
    expect(unknown.body.errors).toEqual([{ field: 'litellm_params.aws_secret_access_key', rule: expect.stringMatching(/platform key's env var \(AWS_SECRET is none\)/) }]);
    await t.api().put('/api/v1/admin/platform-keys/aws-secret').send({ api_key: 'aws-secret-value-123456', env_var: 'AWS_SECRET' }).expect(200);
    await t.api().post('/api/v1/admin/models').send(model).expect(201);
  });

  it('secrets are refused at any depth of litellm_params and model_info, and in URLs', async () => {
    const res = await t
      .api()
      .post('/api/v1/admin/models')
      .send({
        model_name: 'm',
        provider: 'groq',
        model: 'x',
        litellm_params: { extra_headers: { Authorization: 'Bearer sk-nested-secret-1234' }, vertex_credentials: { private_key: 'pem' } },
        model_info: { notes: 'fine', api_key: 'sk-info-secret-99999' },
      })
      .expect(400);
    const fields = res.body.errors.map((e: { field: string }) => e.field).sort();
    expect(fields).toEqual(['litellm_params.extra_headers.Authorization', 'litellm_params.vertex_credentials', 'model_info.api_key']);
    expect(JSON.stringify(res.body)).not.toMatch(/sk-nested-secret|sk-info-secret/);
    const url = await t.api().put('/api/v1/admin/providers/withcreds').send({ kind: 'openai', api_base: 'https://user:hunter2@llm.example.com/v1' }).expect(400);
    expect(url.body.errors).toEqual([{ field: 'api_base', rule: expect.stringMatching(/without user:password@/) }]);
    await t.api().post('/api/v1/admin/models').send({ model_name: 'm', provider: 'groq', model: 'x', litellm_params: { api_key: 'os.environ/OTHER' } }).expect(400);
  });

  it('models: create, read, replace, list by filter, delete', async () => {
    const c = await t.api().post('/api/v1/admin/models').send({ model_name: 'fast', provider: 'groq', model: 'llama-3.1-8b-instant', rpm: 100, tpm: 10000, model_info: { tier: 'cheap' } }).expect(201);
    expect(c.body).toMatchObject({ model_name: 'fast', provider: 'groq', rpm: 100, tpm: 10000, model_info: { tier: 'cheap' } });
    expect(c.body.id).toMatch(/^[0-9a-f-]{36}$/);
    const r = await t.api().put(`/api/v1/admin/models/${c.body.id}`).send({ model_name: 'fast', provider: 'groq', model: 'llama-3.3-70b-versatile' }).expect(200);
    expect(r.body).toMatchObject({ model: 'llama-3.3-70b-versatile', rpm: null });
    const list = await t.api().get('/api/v1/admin/models?model_name=fast').expect(200);
    expect(list.body.items).toHaveLength(1);
    await t.api().get(`/api/v1/admin/models/not-a-uuid`).expect(400);
    await t.api().delete(`/api/v1/admin/models/${c.body.id}`).expect(204);
    await t.api().get(`/api/v1/admin/models/${c.body.id}`).expect(404);
    const neg = await t.api().post('/api/v1/admin/models').send({ model_name: 'x', provider: 'groq', model: 'y', rpm: -1 }).expect(400);
    expect(neg.body.errors[0].field).toBe('rpm');
  });

  it('deleting a provider that models use is a 409 naming them', async () => {
    const m1 = await t.api().post('/api/v1/admin/models').send({ model_name: 'claude', provider: 'anthropic', model: 'claude-3-5-sonnet-latest' }).expect(201);
    const res = await t.api().delete('/api/v1/admin/providers/anthropic').expect(409);
    expect(res.body.detail).toContain('claude');
    expect(res.body.models).toEqual([{ id: m1.body.id, model_name: 'claude' }]);
    await t.api().get('/api/v1/admin/providers/anthropic').expect(200);
    await t.api().delete(`/api/v1/admin/models/${m1.body.id}`).expect(204);
    await t.api().delete('/api/v1/admin/providers/anthropic').expect(204);
    await t.api().delete('/api/v1/admin/providers/anthropic').expect(404);
  });

  it('routing: aliases and fallbacks replace as a whole and are validated', async () => {
    const res = await t.api().put('/api/v1/admin/routing').send({ aliases: { balanced: 'gpt-4o-mini' }, fallbacks: { 'gpt-4': ['claude-3-5-sonnet'] } }).expect(200);
    expect(res.body).toMatchObject({ aliases: { balanced: 'gpt-4o-mini' }, fallbacks: { 'gpt-4': ['claude-3-5-sonnet'] }, version: 1 });
    const got = await t.api().get('/api/v1/admin/routing').expect(200);
    expect(got.body.fallbacks).toEqual({ 'gpt-4': ['claude-3-5-sonnet'] });
    const bad = await t.api().put('/api/v1/admin/routing').send({ aliases: { a: 'a' }, fallbacks: { x: 'y' } }).expect(400);
    expect(bad.body.errors.map((e: { field: string }) => e.field).sort()).toEqual(['aliases.a', 'fallbacks.x']);
    const after = await t.api().get('/api/v1/admin/routing').expect(200);
    expect(after.body.version).toBe(1);
  });
});
