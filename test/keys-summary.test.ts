import request from 'supertest';
import { startTestApp, type TestApp } from './helpers/app';
import { startFakeProvider, type FakeProvider } from './helpers/fake-provider';
import { until } from './helpers/wait';

/** Issue 11, item 6: the incident view (list filters and the summary). */
describe('incident view', () => {
  let t: TestApp;
  let fake: FakeProvider;
  let viewer: string;
  const day = 86_400_000;
  const names = (body: { items: Array<{ name: string }> }): string[] => body.items.map((k) => k.name);
  const list = async (query: string, token?: string): Promise<{ items: Array<{ name: string }>; next_cursor: string | null }> => {
    const req = token ? request(t.kp.url!).get(`/api/v1/admin/platform-keys?${query}`).set('Authorization', `Bearer ${token}`) : t.api().get(`/api/v1/admin/platform-keys?${query}`);
    return (await req.expect(200)).body;
  };
  const put = (name: string, body: Record<string, unknown>) => t.api().put(`/api/v1/admin/platform-keys/${name}`).send(body).expect(200);

  beforeAll(async () => {
    fake = await startFakeProvider();
    t = await startTestApp();
    viewer = (await t.kp.tokens.create('watcher', 'viewer', 'test')).token;
    await put('sum-old', { api_key: 'sk-sum-old-value-00000001' });
    await put('sum-mid', { api_key: 'sk-sum-mid-value-00000002' });
    await put('sum-off', { api_key: 'sk-sum-off-value-00000003' });
    await put('sum-soon', { api_key: 'sk-sum-soon-value-0000004', expires_at: new Date(Date.now() + 5 * day).toISOString() });
    await put('sum-gone', { api_key: 'sk-sum-gone-value-0000005', expires_at: new Date(Date.now() - day).toISOString() });
    await put('sum-pool-a', { api_key: 'sk-sum-pool-a-value-00006' });
    await put('sum-pool-b', { api_key: 'sk-sum-pool-b-value-00007' });
    await t.api().put('/api/v1/admin/providers/sump').send({ kind: 'openai', api_base: fake.base('sump'), keys: [{ name: 'sum-pool-a' }, { name: 'sum-pool-b' }] }).expect(201);
    await t.api().post('/api/v1/admin/platform-keys/sum-off/disable').send({ reason: 'leaked in a CI log' }).expect(200);
    // The values in use were written 100 and 50 days ago.
    await t.kp.pool.query(`UPDATE platform_key_versions SET created_at = now() - interval '100 days' WHERE name = 'sum-old'`);
    await t.kp.pool.query(`UPDATE platform_key_versions SET created_at = now() - interval '50 days' WHERE name = 'sum-mid'`);
    // What the prober stores for a provider that reports credit (OpenRouter's key endpoint).
    await t.kp.pool.query(
      `INSERT INTO key_health (name, outcome, http_status, checked_at, credit_limit, credit_usage, credit_remaining, credit_checked_at, credit_low)
       VALUES ('sum-pool-a', 'ok', 200, now(), 100, 90, 10, now(), true), ('sum-pool-b', 'ok', 200, now(), 100, 40, 60, now(), false),
              ('sum-off', 'auth_failed', 401, now(), NULL, NULL, NULL, NULL, false)`,
    );
  });
  afterAll(async () => {
    await t?.close();
    await fake?.close();
  });

  it('filters the key list by state, by the age of the value in use, and by provider; still paged', async () => {
    expect(names(await list('state=disabled'))).toEqual(['sum-off']);
    expect(names(await list('older_than=90d'))).toEqual(['sum-old']);
    expect(names(await list('older_than=30d'))).toEqual(['sum-mid', 'sum-old']);
    expect(names(await list('older_than=30d&state=active'))).toEqual(['sum-mid', 'sum-old']);
    expect(names(await list('older_than=30d&state=disabled,retiring'))).toEqual([]);
    expect(names(await list('provider=sump'))).toEqual(['sum-pool-a', 'sum-pool-b']);
    expect(names(await list('provider=nobody'))).toEqual([]);
    expect(names(await list('state=active,disabled&provider=sump', viewer))).toEqual(['sum-pool-a', 'sum-pool-b']);

    const first = await list('older_than=30d&limit=1');
    expect(names(first)).toEqual(['sum-mid']);
    const second = await list(`older_than=30d&limit=1&cursor=${first.next_cursor}`);
    expect(names(second)).toEqual(['sum-old']);
    expect(second.next_cursor).toBeNull();

    const badState = await t.api().get('/api/v1/admin/platform-keys?state=revoked').expect(400);
    expect(badState.body.errors[0]).toMatchObject({ field: 'query.state', rule: expect.stringContaining('active, cooling, disabled, retiring') });
    const noUnit = await t.api().get('/api/v1/admin/platform-keys?older_than=90').expect(400);
    expect(noUnit.body.errors[0]).toMatchObject({ field: 'query.older_than', rule: expect.stringContaining('no unit') });
    await t.api().get('/api/v1/admin/platform-keys?provider=Not_A_Slug').expect(400);
    await t.api().get('/api/v1/admin/platform-keys?state=disabled&state=active').expect(400);
  });

  it('summarises by state, oldest values, expiry, keys out of service, credit and rotations under way', async () => {
    const s = (await request(t.kp.url!).get('/api/v1/admin/keys/summary').set('Authorization', `Bearer ${viewer}`).expect(200)).body;
    expect(s.total).toBe(7);
    expect(s.by_state).toEqual({ active: 6, cooling: 0, disabled: 1, retiring: 0 });
    expect(s.oldest.slice(0, 2).map((k: { name: string; age_days: number }) => [k.name, k.age_days])).toEqual([
      ['sum-old', 100],
      ['sum-mid', 50],
    ]);
    expect(s.expiring.count).toBe(2);
    expect(s.expiring.items.map((k: { name: string; expired: boolean }) => [k.name, k.expired])).toEqual([
      ['sum-gone', true],
      ['sum-soon', false],
    ]);
    expect(s.out_of_service).toEqual({
      count: 1,
      items: [{ name: 'sum-off', reason: 'manual', note: 'leaked in a CI log', since: expect.any(String), replaced_by: null, providers: [], last_probe: { outcome: 'auth_failed', http_status: 401, checked_at: expect.any(String) } }],
    });
    expect(s.credit.count).toBe(2);
    expect(s.credit.items.map((c: Record<string, unknown>) => [c.name, c.limit, c.remaining, c.remaining_fraction, c.low, c.providers])).toEqual([
      ['sum-pool-a', 100, 10, 0.1, true, ['sump']],
      ['sum-pool-b', 100, 60, 0.6, false, ['sump']],
    ]);
    expect(s.rotations).toEqual([]);

    // A rotation under way shows in the summary, and its retiring key in the counts and the filter.
    const r = await t.api().post('/api/v1/admin/providers/sump/rotate').send({ api_key: 'sk-sum-pool-c-value-00008', replaces: 'sum-pool-b', name: 'sum-pool-c', grace: '1h' }).expect(202);
    await until('the old key retires', async () => (await t.api().get('/api/v1/admin/platform-keys/sum-pool-b').expect(200)).body.state === 'retiring');
    const after = (await t.api().get('/api/v1/admin/keys/summary').expect(200)).body;
    expect(after.by_state).toEqual({ active: 6, cooling: 0, disabled: 1, retiring: 1 });
    expect(after.rotations).toEqual([{ rotation_id: r.body.rotation_id, provider: 'sump', new_key: 'sum-pool-c', replaces: 'sum-pool-b', status: 'retiring', retire_at: expect.any(String) }]);
    expect(names(await list('state=retiring'))).toEqual(['sum-pool-b']);
    expect(names(await list('provider=sump'))).toEqual(['sum-pool-a', 'sum-pool-b', 'sum-pool-c']);
  });
});
