import request from 'supertest';
import { startTestApp, type TestApp } from './helpers/app';
import { startFakeProvider, type FakeProvider } from './helpers/fake-provider';

/** /metrics is unauthenticated: it may say how many keys expire and when the first does, never which. */
describe('/metrics names no platform key', () => {
  let fake: FakeProvider;
  let t: TestApp;
  const KEY_NAMES = ['finance-team-zq7', 'acquisition-project-x9k', 'no-expiry-key-m3p'];
  beforeAll(async () => {
    fake = await startFakeProvider();
    t = await startTestApp({ env: { KEYPLANE_LITELLM_URL: fake.base('litellm') } });
  });
  afterAll(async () => {
    await t.close();
    await fake.close();
  });

  it('exports the count of keys expiring within 14 days and the earliest expiry, with provider labels but no key names', async () => {
    const soon = new Date(Date.now() + 3 * 86_400_000);
    const later = new Date(Date.now() + 9 * 86_400_000);
    await t.api().put(`/api/v1/admin/platform-keys/${KEY_NAMES[0]}`).send({ api_key: 'sk-metrics-finance-0001', expires_at: soon.toISOString() }).expect(200);
    await t.api().put(`/api/v1/admin/platform-keys/${KEY_NAMES[1]}`).send({ api_key: 'sk-metrics-acquire-0002', expires_at: later.toISOString() }).expect(200);
    await t.api().put(`/api/v1/admin/platform-keys/${KEY_NAMES[2]}`).send({ api_key: 'sk-metrics-noexpiry-0003' }).expect(200);
    await t.api().put('/api/v1/admin/providers/openai').send({ kind: 'openai', api_base: fake.base('openai'), key_name: KEY_NAMES[0] }).expect(200);

    await t.api().post('/api/v1/admin/llm/health/check').expect(200);
    const res = await request(t.kp.url!).get('/metrics').expect(200);
    expect(res.text).toContain('keyplane_platform_keys_expiring 2');
    expect(res.text).toContain(`keyplane_platform_key_earliest_expiry_timestamp_seconds ${Math.floor(soon.getTime() / 1000)}`);
    expect(res.text).toMatch(/keyplane_provider_health_status\{provider="openai",status="\w+"\} 1/);
    for (const name of KEY_NAMES) expect(res.text).not.toContain(name);
    expect(res.text).not.toMatch(/\{[^}]*\bkey="/);
  });
});
