import { readFileSync } from 'node:fs';
import path from 'node:path';
import request from 'supertest';
import YAML from 'yaml';
import { startTestApp, type TestApp } from './helpers/app';
import { startFakeProvider, type FakeProvider } from './helpers/fake-provider';
import { until } from './helpers/wait';

/**
 * Issue 11, items 2-4 and 7: every pool key probed by the real prober in a real keyplane, against
 * fake providers on 127.0.0.1 that answer per key; states, recovery, credit, and what is rendered.
 */
describe('key probes', () => {
  let fake: FakeProvider;
  let t: TestApp;
  let operator: string;
  const V = (name: string): string => `sk-${name}-value-00000000000000`;

  const config = (): { model_list?: Array<{ model_name: string; litellm_params: Record<string, unknown> }> } =>
    YAML.parse(readFileSync(path.join(t.settings.outputDir, 'config.yaml'), 'utf8')) ?? {};
  const servedKeys = (model: string): unknown[] => (config().model_list ?? []).filter((d) => d.model_name === model).map((d) => d.litellm_params.api_key);
  const alerts = (type: string): Array<Record<string, unknown>> =>
    t
      .logs()
      .split('\n')
      .filter((l) => l.includes('"alert"'))
      .map((l) => (JSON.parse(l) as { event?: Record<string, unknown> }).event)
      .filter((e): e is Record<string, unknown> => e?.type === type);
  const round = async (): Promise<{ keys: Array<Record<string, unknown>> }> => (await t.api().post('/api/v1/admin/llm/health/check').expect(200)).body;
  const key = async (name: string): Promise<Record<string, any>> => (await t.api().get(`/api/v1/admin/platform-keys/${name}`).expect(200)).body;
  const envVar = (name: string): string => `${name.toUpperCase().replace(/-/g, '_')}_API_KEY`;

  /** Keys (values from V), a provider pooling them in order, and one model on it; renders and waits until every key serves. */
  async function pool(slug: string, names: string[], opts: { kind?: string; apiBase?: string } = {}): Promise<string> {
    for (const n of names) await t.api().put(`/api/v1/admin/platform-keys/${n}`).send({ api_key: V(n) }).expect(200);
    await t
      .api()
      .put(`/api/v1/admin/providers/${slug}`)
      .send({ kind: opts.kind ?? 'openai', api_base: opts.apiBase ?? fake.base(slug), keys: names.map((name) => ({ name })) })
      .expect(201);
    const model = `${slug}-model`;
    await t.api().post('/api/v1/admin/models').send({ model_name: model, provider: slug, model: 'some-model' }).expect(201);
    await until(`${model} is served by ${names.length} keys`, () => servedKeys(model).length === names.length);
    return model;
  }

  beforeAll(async () => {
    fake = await startFakeProvider();
    t = await startTestApp({ env: { KEYPLANE_KEY_RECHECK: '200ms:1s', KEYPLANE_LITELLM_URL: fake.base('litellm') } });
    operator = (await t.kp.tokens.create('op', 'operator', 'test')).token;
  });
  afterAll(async () => {
    await t.close();
    await fake.close();
  });

  it('a revoked key of a pool of three is out of the files after one round, and back after it works again for N probes in a row, with alerts', async () => {
    const model = await pool('trio', ['trio-a', 'trio-b', 'trio-c']);
    fake.keyAnswer('trio', V('trio-b'), 'unauthorized');

    const r = await round();
    expect(r.keys.find((k) => k.name === 'trio-b')).toMatchObject({ outcome: 'auth_failed', http_status: 401, previous_state: 'active', state: 'disabled', state_reason: 'auth_failed', changed: true });
    expect(r.keys.filter((k) => String(k.name).startsWith('trio-') && k.changed)).toHaveLength(1);
    const envFile = (): string => readFileSync(path.join(t.settings.outputDir, 'litellm.env'), 'utf8');
    await until('trio-b is out of both files', () => servedKeys(model).length === 2 && !envFile().includes(V('trio-b')));
    expect(servedKeys(model)).toEqual([`os.environ/${envVar('trio-a')}`, `os.environ/${envVar('trio-c')}`]);
    const b = await key('trio-b');
    expect(b).toMatchObject({ state: 'disabled', state_reason: 'auth_failed', health: { outcome: 'auth_failed', endpoint: 'GET /trio/models', http_status: 401 } });
    expect(b.state_note).toContain('HTTP 401');
    expect(Date.parse(b.health.next_probe_at)).toBeGreaterThan(Date.parse(b.health.checked_at));
    expect(alerts('key.state_changed').find((a) => a.key_name === 'trio-b')).toMatchObject({ from: 'active', to: 'disabled', reason: 'auth_failed', providers: ['trio'] });
    const audit = await t.api().get('/api/v1/admin/audit?limit=20').expect(200);
    expect(audit.body.items.find((a: { target: string; action: string }) => a.target === 'platform_key/trio-b' && a.action === 'platform_key.state')).toMatchObject({ actor: 'prober' });
    // The provider's health probe and trio-a's key probe were one request.
    expect(fake.requestsFor('trio').filter((q) => q.key === V('trio-a'))).toHaveLength(1);

    // It keeps being probed on its own, and failing, with growing intervals.
    await until('trio-b was rechecked twice', () => fake.requestsFor('trio').filter((q) => q.key === V('trio-b')).length >= 3);
    const fixedAt = fake.requestsFor('trio').length;
    fake.keyAnswer('trio', V('trio-b'), undefined);
    await until('trio-b is active again', async () => (await key('trio-b')).state === 'active', 15_000);
    await until('trio-b serves again', () => servedKeys(model).length === 3);
    const back = await key('trio-b');
    expect(back.health).toMatchObject({ outcome: 'ok', ok_streak: 2, next_probe_at: null });
    // Exactly N = 2 good probes (KEYPLANE_HEALTH_RECOVER_THRESHOLD): none before, none after it returned.
    expect(fake.requestsFor('trio').slice(fixedAt).filter((q) => q.key === V('trio-b'))).toHaveLength(2);
    expect(alerts('key.state_changed').filter((a) => a.key_name === 'trio-b').at(-1)).toMatchObject({ from: 'disabled', from_reason: 'auth_failed', to: 'active' });
    const provider = await t.api().get('/api/v1/admin/providers/trio').expect(200);
    expect(provider.body.keys.map((k: { health: { outcome: string } }) => k.health.outcome)).toEqual(['ok', 'ok', 'ok']);
  });

  it('each answer moves the key its way: 401/403 auth_failed, 402 and insufficient_quota (also on 429) quota_exhausted, 5xx nothing', async () => {
    const names = ['mix-ok', 'mix-401', 'mix-403', 'mix-402', 'mix-quota', 'mix-500'];
    const model = await pool('mix', names);
    fake.keyAnswer('mix', V('mix-401'), 'unauthorized');
    fake.keyAnswer('mix', V('mix-403'), 'forbidden');
    fake.keyAnswer('mix', V('mix-402'), 'payment_required');
    fake.keyAnswer('mix', V('mix-quota'), 'insufficient_quota');
    fake.keyAnswer('mix', V('mix-500'), 'error');
    const r = await round();
    const by = Object.fromEntries(r.keys.map((k) => [k.name, k]));
    expect(by['mix-ok']).toMatchObject({ outcome: 'ok', state: 'active', changed: false });
    expect(by['mix-401']).toMatchObject({ outcome: 'auth_failed', state: 'disabled', state_reason: 'auth_failed' });
    expect(by['mix-403']).toMatchObject({ outcome: 'auth_failed', state: 'disabled', state_reason: 'auth_failed' });
    expect(by['mix-402']).toMatchObject({ outcome: 'quota_exhausted', http_status: 402, state: 'disabled', state_reason: 'quota_exhausted' });
    expect(by['mix-quota']).toMatchObject({ outcome: 'quota_exhausted', http_status: 429, state: 'disabled', state_reason: 'quota_exhausted' });
    expect(by['mix-500']).toMatchObject({ outcome: 'error', http_status: 500, state: 'active', changed: false });
    await until('only mix-ok and mix-500 serve', () => servedKeys(model).length === 2);
    expect(servedKeys(model)).toEqual([`os.environ/${envVar('mix-ok')}`, `os.environ/${envVar('mix-500')}`]);

    const metrics = (await request(t.kp.url!).get('/metrics').expect(200)).text;
    expect(metrics).toContain('keyplane_pool_keys{provider="mix",state="disabled"} 4');
    expect(metrics).toContain('keyplane_pool_keys{provider="mix",state="active"} 2');
    expect(Number(/keyplane_key_probes_total\{provider="mix",outcome="quota_exhausted"\} (\d+)/.exec(metrics)?.[1])).toBeGreaterThanOrEqual(2);
    for (const n of names) expect(metrics).not.toContain(n);
  });

  it('with every key of a pool refused, its models are left out, loudly, and an alert names them', async () => {
    const model = await pool('duo', ['duo-a', 'duo-b']);
    fake.keyAnswer('duo', V('duo-a'), 'unauthorized');
    fake.keyAnswer('duo', V('duo-b'), 'payment_required');
    await round();
    await until(`${model} is out of config.yaml`, () => servedKeys(model).length === 0);
    const status = await t.api().get('/api/v1/admin/sync').expect(200);
    expect(JSON.stringify(status.body)).toContain('no_key_in_service');
    expect(alerts('provider.no_keys').find((a) => a.provider === 'duo')).toMatchObject({ models: [model] });
    const provider = await t.api().get('/api/v1/admin/providers/duo').expect(200);
    expect(provider.body).toMatchObject({ keys_in_service: 0, active: false });
  });

  it('a manual disable never returns on its own, while a key the probes disabled does', async () => {
    const model = await pool('manual', ['manual-m', 'manual-r']);
    await request(t.kp.url!).post('/api/v1/admin/platform-keys/manual-m/disable').set('Authorization', `Bearer ${operator}`).send({ reason: 'leaked' }).expect(200);
    fake.keyAnswer('manual', V('manual-r'), 'unauthorized');
    await round();
    await until('both keys are out', () => servedKeys(model).length === 0);
    fake.keyAnswer('manual', V('manual-r'), undefined);
    // manual-m passes every probe: in rounds, and as long as manual-r takes to come back.
    await round();
    await until('manual-r is back', async () => (await key('manual-r')).state === 'active', 15_000);
    await round();
    const m = await key('manual-m');
    expect(m).toMatchObject({ state: 'disabled', state_reason: 'manual', state_note: 'leaked', health: { outcome: 'ok', ok_streak: 3 } });
    await until('manual-r serves again', () => servedKeys(model).length === 1);
    expect(servedKeys(model)).toEqual([`os.environ/${envVar('manual-r')}`]);
  });

  it('a 429 cools the key, still rendered, until Retry-After (or 60 s); a cooling key whose time passed is active after a good probe', async () => {
    const model = await pool('cool', ['cool-long', 'cool-none', 'cool-now']);
    fake.keyAnswer('cool', V('cool-long'), 'rate_limited', { retryAfter: '120' });
    fake.keyAnswer('cool', V('cool-none'), 'rate_limited');
    fake.keyAnswer('cool', V('cool-now'), 'rate_limited', { retryAfter: '0' });
    const before = Date.now();
    await round();
    const long = await key('cool-long');
    const none = await key('cool-none');
    expect(long).toMatchObject({ state: 'cooling', state_reason: 'rate_limited', health: { outcome: 'rate_limited', http_status: 429 } });
    expect(Date.parse(long.state_until) - before).toBeGreaterThanOrEqual(119_000);
    expect(Date.parse(long.state_until) - Date.now()).toBeLessThanOrEqual(120_000);
    expect(Date.parse(none.state_until) - before).toBeGreaterThanOrEqual(59_000);
    expect(Date.parse(none.state_until) - Date.now()).toBeLessThanOrEqual(60_000);
    expect((await key('cool-now')).state).toBe('cooling');
    // Cooling keys stay in service.
    await t.api().post('/api/v1/admin/sync').send({}).expect(200);
    expect(servedKeys(model)).toHaveLength(3);

    for (const n of ['cool-long', 'cool-none', 'cool-now']) fake.keyAnswer('cool', V(n), undefined);
    await round();
    expect((await key('cool-long')).state).toBe('cooling');
    expect((await key('cool-none')).state).toBe('cooling');
    expect(await key('cool-now')).toMatchObject({ state: 'active', state_reason: null, state_until: null });
  });

  it('OpenRouter: the key record proves the key (its model list answers any key), its credit is stored, shown, exported and alerted once per crossing', async () => {
    const base = `${fake.base('or')}/api/v1`;
    fake.publicModels('or', true);
    fake.keyAnswer('or', V('or-bad'), 'unauthorized');
    fake.setCredit('or', V('or-a'), { limit: 100, usage: 50 });
    const model = await pool('or', ['or-a', 'or-bad'], { kind: 'openrouter', apiBase: base });
    // What a prober that listed models would have seen: 200 for the revoked key.
    const models = await fetch(`${base}/models`, { headers: { authorization: `Bearer ${V('or-bad')}` } });
    expect(models.status).toBe(200);

    await round();
    expect(await key('or-bad')).toMatchObject({ state: 'disabled', state_reason: 'auth_failed', health: { endpoint: 'GET /or/api/v1/key', http_status: 401 } });
    await until('or-bad is out', () => servedKeys(model).length === 1);
    const a = await key('or-a');
    expect(a.health).toMatchObject({ outcome: 'ok', endpoint: 'GET /or/api/v1/key', credit: { limit: 100, usage: 50, remaining: 50, fraction_remaining: 0.5, low: false } });
    const lowAlerts = (): Array<Record<string, unknown>> => alerts('key.credit_low').filter((e) => e.key_name === 'or-a');
    expect(lowAlerts()).toHaveLength(0);

    fake.setCredit('or', V('or-a'), { limit: 100, usage: 95 });
    await round();
    await round();
    await until('one credit alert', () => lowAlerts().length === 1);
    expect(lowAlerts()[0]).toMatchObject({ remaining: 5, limit: 100, usage: 95, threshold: 0.1, providers: ['or'] });
    const provider = await t.api().get('/api/v1/admin/providers/or').expect(200);
    expect(provider.body.keys[0]).toMatchObject({ name: 'or-a', health: { credit: { remaining: 5, low: true } } });
    const metrics = (await request(t.kp.url!).get('/metrics').expect(200)).text;
    expect(metrics).toContain('keyplane_key_credit_remaining{provider="or",slot="0"} 5');
    expect(metrics).toContain('keyplane_key_credit_limit{provider="or",slot="0"} 100');
    expect(metrics).not.toContain('or-a');

    // Topped up: re-armed without an alert; falling again alerts again.
    fake.setCredit('or', V('or-a'), { limit: 200, usage: 95 });
    await round();
    expect((await key('or-a')).health.credit).toMatchObject({ remaining: 105, low: false });
    fake.setCredit('or', V('or-a'), { limit: 200, usage: 190 });
    await round();
    await until('a second credit alert', () => lowAlerts().length === 2);
    await round();
    expect(lowAlerts()).toHaveLength(2);

    // Spent: out of service as quota_exhausted.
    fake.setCredit('or', V('or-a'), { limit: 200, usage: 200 });
    await round();
    expect(await key('or-a')).toMatchObject({ state: 'disabled', state_reason: 'quota_exhausted' });
    await until(`${model} is out`, () => servedKeys(model).length === 0);
  });

  it("a pool's provider is probed with its first key in service: a revoked first key does not make it look down", async () => {
    const model = await pool('firstout', ['firstout-a', 'firstout-b']);
    fake.keyAnswer('firstout', V('firstout-a'), 'unauthorized');
    await round();
    await until('firstout-a is out', () => servedKeys(model).length === 1);
    await round();
    await round();
    const health = await t.api().get('/api/v1/admin/providers/health?limit=1000').expect(200);
    expect(health.body.items.find((x: { slug: string }) => x.slug === 'firstout')).toMatchObject({ status: 'healthy' });
  });

  it('never sends a key where an admin did not approve it (not_approved)', async () => {
    await pool('unappr', ['unappr-a']);
    await t.api().put('/api/v1/admin/platform-keys/unappr-a/allowed-hosts').send({ allowed_hosts: [] }).expect(200);
    const sent = fake.requestsFor('unappr').length;
    const r = await round();
    expect(r.keys.find((k) => k.name === 'unappr-a')).toMatchObject({ outcome: 'not_approved', endpoint: null, state: 'active', changed: false });
    expect(fake.requestsFor('unappr')).toHaveLength(sent);
    expect((await key('unappr-a')).health).toMatchObject({ outcome: 'not_approved' });
  });
});
