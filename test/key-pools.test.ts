import { readFileSync } from 'node:fs';
import path from 'node:path';
import request from 'supertest';
import YAML from 'yaml';
import { startTestApp, type TestApp } from './helpers/app';

/** Issue 11, items 1 and 2: pools of keys per provider, key states, and what each renders. */
describe('key pools', () => {
  let t: TestApp;
  let operator: string;
  const KEYS = { 'pool-a': 'sk-pool-a-value-000000001', 'pool-b': 'sk-pool-b-value-000000002', 'pool-c': 'sk-pool-c-value-000000003' };
  const ENV = { 'pool-a': 'POOL_A_API_KEY', 'pool-b': 'POOL_B_API_KEY', 'pool-c': 'POOL_C_API_KEY' };

  const config = (): { model_list?: Array<{ model_name: string; litellm_params: Record<string, unknown> }> } =>
    YAML.parse(readFileSync(path.join(t.settings.outputDir, 'config.yaml'), 'utf8')) as { model_list?: Array<{ model_name: string; litellm_params: Record<string, unknown> }> };
  const envFile = (): string => readFileSync(path.join(t.settings.outputDir, 'litellm.env'), 'utf8');
  const sync = async (): Promise<Record<string, unknown>> => (await t.api().post('/api/v1/admin/sync').send({}).expect(200)).body;
  const poolDeployments = (): Array<{ key: unknown; weight: unknown }> =>
    (config().model_list ?? []).filter((d) => d.model_name === 'pooled-mini').map((d) => ({ key: d.litellm_params.api_key, weight: d.litellm_params.weight }));
  const alerts = (type: string): Array<Record<string, unknown>> =>
    t
      .logs()
      .split('\n')
      .filter((l) => l.includes('"alert"'))
      .map((l) => (JSON.parse(l) as { event?: Record<string, unknown> }).event)
      .filter((e): e is Record<string, unknown> => e?.type === type);
  const as = (token: string) => ({
    post: (url: string) => request(t.kp.url!).post(url).set('Authorization', `Bearer ${token}`),
    put: (url: string) => request(t.kp.url!).put(url).set('Authorization', `Bearer ${token}`),
  });

  beforeAll(async () => {
    t = await startTestApp();
    operator = (await t.kp.tokens.create('op', 'operator', 'test')).token;
    for (const [name, value] of Object.entries(KEYS)) {
      await t.api().put(`/api/v1/admin/platform-keys/${name}`).send({ api_key: value, env_var: ENV[name as keyof typeof ENV] }).expect(200);
    }
    // The admin's write approves each key for the provider's destination.
    await t
      .api()
      .put('/api/v1/admin/providers/pooled')
      .send({ kind: 'openai', api_base: 'https://api.pooled.example/v1', keys: [{ name: 'pool-a', weight: 3 }, { name: 'pool-b' }, { name: 'pool-c' }] })
      .expect(201);
    await t.api().post('/api/v1/admin/models').send({ model_name: 'pooled-mini', provider: 'pooled', model: 'gpt-4o-mini' }).expect(201);
  });
  afterAll(async () => {
    await t.close();
  });

  it('renders one deployment per key of the pool, with its weight, under one model_name', async () => {
    const view = await t.api().get('/api/v1/admin/providers/pooled').expect(200);
    expect(view.body).toMatchObject({ key_name: 'pool-a', keys_in_service: 3, active: true });
    expect(view.body.keys.map((k: { name: string; weight: number; state: string }) => [k.name, k.weight, k.state])).toEqual([
      ['pool-a', 3, 'active'],
      ['pool-b', 1, 'active'],
      ['pool-c', 1, 'active'],
    ]);
    await sync();
    expect(poolDeployments()).toEqual([
      { key: 'os.environ/POOL_A_API_KEY', weight: 3 },
      { key: 'os.environ/POOL_B_API_KEY', weight: 1 },
      { key: 'os.environ/POOL_C_API_KEY', weight: 1 },
    ]);
  });

  it('a manual disable leaves the key out of both files at once, is audited and alerted, and shows on the key and the provider', async () => {
    const res = await as(operator).post('/api/v1/admin/platform-keys/pool-b/disable').send({ reason: 'leaked in a CI log' }).expect(200);
    expect(res.body).toMatchObject({ name: 'pool-b', state: 'disabled', state_reason: 'manual', state_note: 'leaked in a CI log' });
    await sync();
    expect(poolDeployments().map((d) => d.key)).toEqual(['os.environ/POOL_A_API_KEY', 'os.environ/POOL_C_API_KEY']);
    expect(envFile()).not.toContain('POOL_B_API_KEY=');
    expect(envFile()).toContain(`POOL_A_API_KEY=${KEYS['pool-a']}\n`);
    const status = await t.api().get('/api/v1/admin/sync').expect(200);
    expect(JSON.stringify(status.body)).toContain('"key":"pool-b"');
    const provider = await t.api().get('/api/v1/admin/providers/pooled').expect(200);
    expect(provider.body.keys_in_service).toBe(2);
    expect(provider.body.keys[1]).toMatchObject({ name: 'pool-b', state: 'disabled', state_reason: 'manual' });
    const audit = await t.api().get('/api/v1/admin/audit?limit=5').expect(200);
    expect(audit.body.items.find((a: { action: string }) => a.action === 'platform_key.state')).toMatchObject({
      actor: expect.stringContaining('op'),
      target: 'platform_key/pool-b',
      details: { from: 'active', to: 'disabled', reason: 'manual', note: 'leaked in a CI log' },
    });
    expect(alerts('key.state_changed').at(-1)).toMatchObject({ key_name: 'pool-b', from: 'active', to: 'disabled', reason: 'manual', providers: ['pooled'] });
  });

  it('with every key out the models are left out, loudly, and an alert names them; enabling one brings them back', async () => {
    await as(operator).post('/api/v1/admin/platform-keys/pool-a/disable').send({}).expect(200);
    await as(operator).post('/api/v1/admin/platform-keys/pool-c/disable').send({ reason: 'rotating' }).expect(200);
    const status = await sync();
    expect(poolDeployments()).toEqual([]);
    expect(JSON.stringify(status)).toContain('no_key_in_service');
    const loud = (await t.api().get('/api/v1/admin/sync').expect(200)).body;
    expect(loud.providers_without_keys).toEqual([{ provider: 'pooled', models: ['pooled-mini'] }]);
    expect(loud.alert).toMatch(/1 provider\(s\) have no key in service; their models are not served: pooled/);
    expect(alerts('provider.no_keys').at(-1)).toMatchObject({ provider: 'pooled', models: ['pooled-mini'] });
    const provider = await t.api().get('/api/v1/admin/providers/pooled').expect(200);
    expect(provider.body).toMatchObject({ keys_in_service: 0, active: false });

    const back = await as(operator).post('/api/v1/admin/platform-keys/pool-c/enable').send({}).expect(200);
    expect(back.body).toMatchObject({ state: 'active', state_reason: null });
    await sync();
    expect((await t.api().get('/api/v1/admin/sync').expect(200)).body.providers_without_keys).toBeUndefined();
    expect(poolDeployments()).toEqual([{ key: 'os.environ/POOL_C_API_KEY', weight: 1 }]);
    expect(alerts('provider.keys_restored').at(-1)).toMatchObject({ provider: 'pooled', models: ['pooled-mini'] });
    await as(operator).post('/api/v1/admin/platform-keys/pool-a/enable').send({}).expect(200);
    await as(operator).post('/api/v1/admin/platform-keys/pool-b/enable').send({}).expect(200);
  });

  it('two keys of one pool disabled at the same moment: the provider is reported out of keys once', async () => {
    await t.api().put('/api/v1/admin/platform-keys/race-a').send({ api_key: 'sk-race-a-value-000000005' }).expect(200);
    await t.api().put('/api/v1/admin/platform-keys/race-b').send({ api_key: 'sk-race-b-value-000000006' }).expect(200);
    await t.api().put('/api/v1/admin/providers/racing').send({ kind: 'openai', api_base: 'https://api.racing.example/v1', keys: [{ name: 'race-a' }, { name: 'race-b' }] }).expect(201);
    await t.api().post('/api/v1/admin/models').send({ model_name: 'racing-mini', provider: 'racing', model: 'gpt-4o-mini' }).expect(201);
    for (let round = 0; round < 5; round++) {
      const before = alerts('provider.no_keys').filter((a) => a.provider === 'racing').length;
      await Promise.all(['race-a', 'race-b'].map((k) => as(operator).post(`/api/v1/admin/platform-keys/${k}/disable`).send({}).expect(200)));
      expect(alerts('provider.no_keys').filter((a) => a.provider === 'racing').length).toBe(before + 1);
      await Promise.all(['race-a', 'race-b'].map((k) => as(operator).post(`/api/v1/admin/platform-keys/${k}/enable`).send({}).expect(200)));
    }
  });

  it('refuses what cannot work, naming the field and the rule', async () => {
    const dup = await t.api().put('/api/v1/admin/providers/pooled').send({ kind: 'openai', keys: [{ name: 'pool-a' }, { name: 'pool-a' }] }).expect(400);
    expect(dup.body.errors).toEqual([{ field: 'keys[1].name', rule: 'pool-a is already in the pool' }]);
    const mismatch = await t.api().put('/api/v1/admin/providers/pooled').send({ kind: 'openai', key_name: 'pool-b', keys: [{ name: 'pool-a' }] }).expect(400);
    expect(mismatch.body.errors).toEqual([{ field: 'key_name', rule: 'must be the first of keys when both are given' }]);
    const empty = await t.api().put('/api/v1/admin/providers/pooled').send({ kind: 'openai', keys: [] }).expect(400);
    expect(empty.body.errors).toEqual([{ field: 'keys', rule: 'must name at least one key' }]);
    const weight = await t.api().put('/api/v1/admin/providers/pooled').send({ kind: 'openai', keys: [{ name: 'pool-a', weight: 0 }] }).expect(400);
    expect(weight.body.errors).toEqual([{ field: 'keys.0.weight', rule: 'must be 1 or more' }]);
    const reserved = await t.api().put('/api/v1/admin/providers/pooled').send({ kind: 'openai', keys: [{ name: 'pool-a' }, { name: 'litellm_master_key' }] }).expect(400);
    expect(reserved.body.errors).toEqual([{ field: 'keys[1].name', rule: expect.stringMatching(/LiteLLM's own key/) }]);
    await t.api().post('/api/v1/admin/platform-keys/litellm_master_key/disable').send({}).expect(409);
    await t.api().post('/api/v1/admin/platform-keys/no-such-key/disable').send({}).expect(404);
    const longNote = await t.api().post('/api/v1/admin/platform-keys/pool-a/disable').send({ reason: 'x'.repeat(501) }).expect(400);
    expect(longNote.body.errors[0].field).toBe('reason');
    // Nothing of the refused writes stuck.
    const view = await t.api().get('/api/v1/admin/providers/pooled').expect(200);
    expect(view.body.keys.map((k: { name: string }) => k.name)).toEqual(['pool-a', 'pool-b', 'pool-c']);
  });

  it("an operator cannot add a key to a pool whose destination an admin did not approve for it", async () => {
    await t.api().put('/api/v1/admin/platform-keys/elsewhere').send({ api_key: 'sk-elsewhere-value-0000004' }).expect(200);
    const res = await as(operator).put('/api/v1/admin/providers/pooled').send({ kind: 'openai', keys: [{ name: 'pool-a' }, { name: 'elsewhere' }] }).expect(403);
    expect(res.body.type).toMatch(/destination-not-approved/);
    expect(JSON.stringify(res.body)).toContain('elsewhere');
    // Reordering and reweighting approved keys needs no approval.
    await as(operator).put('/api/v1/admin/providers/pooled').send({ kind: 'openai', keys: [{ name: 'pool-c', weight: 2 }, { name: 'pool-a' }, { name: 'pool-b' }] }).expect(200);
    await sync();
    expect(poolDeployments()).toEqual([
      { key: 'os.environ/POOL_C_API_KEY', weight: 2 },
      { key: 'os.environ/POOL_A_API_KEY', weight: 1 },
      { key: 'os.environ/POOL_B_API_KEY', weight: 1 },
    ]);
    // key_name alone is a pool of one, as before pools.
    const one = await t.api().put('/api/v1/admin/providers/pooled').send({ kind: 'openai', key_name: 'pool-a' }).expect(200);
    expect(one.body.keys.map((k: { name: string }) => k.name)).toEqual(['pool-a']);
    await sync();
    expect(poolDeployments()).toEqual([{ key: 'os.environ/POOL_A_API_KEY', weight: undefined }]);
  });
});
