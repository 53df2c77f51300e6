import { startTestApp, type TestApp } from './helpers/app';

describe('audit trail', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp();
  });
  afterAll(async () => {
    await t.close();
  });

  it('every change writes one row with actor, action, target, version, request id and time, never a secret', async () => {
    const secret = 'sk-audit-secret-value-777';
    await t.api().put('/api/v1/admin/platform-keys/openai').set('X-Request-Id', 'req-put-1').send({ api_key: secret }).expect(200);
    await t.api().put('/api/v1/admin/providers/local').send({ kind: 'ollama', api_base: 'http://127.0.0.1:11434' }).expect(201);
    const model = await t.api().post('/api/v1/admin/models').send({ model_name: 'gpt-4o-mini', provider: 'openai', model: 'gpt-4o-mini' }).expect(201);
    await t.api().put('/api/v1/admin/routing').send({ aliases: { balanced: 'gpt-4o-mini' } }).expect(200);
    await t.api().delete(`/api/v1/admin/models/${model.body.id}`).expect(204);
    await t.api().delete('/api/v1/admin/providers/local').expect(204);
    const res = await t.api().get('/api/v1/admin/audit?limit=50').expect(200);
    const actions = res.body.items.map((i: { action: string }) => i.action).reverse();
    expect(actions).toEqual(['platform_key.put', 'provider.create', 'model.create', 'routing.put', 'model.delete', 'provider.delete']);
    const put = res.body.items.find((i: { action: string }) => i.action === 'platform_key.put');
    expect(put).toMatchObject({ actor: 'bootstrap', target: 'platform_key/openai', version: 1, request_id: 'req-put-1' });
    expect(Date.parse(put.at)).toBeGreaterThan(Date.now() - 60_000);
    expect(JSON.stringify(res.body)).not.toContain(secret);
  });

  it('a failed change writes no audit row', async () => {
    const before = await t.db.pool.query('SELECT count(*)::int AS n FROM audit_log');
    await t.api().post('/api/v1/admin/models').send({ model_name: 'x', provider: 'nope', model: 'y' }).expect(400);
    await t.api().put('/api/v1/admin/platform-keys/openai').set('If-Match', '"9"').send({ api_key: 'sk-1234567890' }).expect(412);
    const after = await t.db.pool.query('SELECT count(*)::int AS n FROM audit_log');
    expect(after.rows[0].n).toBe(before.rows[0].n);
  });

  it('the chain verifies, and an edit by SQL breaks it at that row', async () => {
    for (let i = 0; i < 5; i++) await t.api().put('/api/v1/admin/platform-keys/openai').send({ api_key: `sk-chain-value-${i}-abcdef` }).expect(200);
    const ok = await t.api().get('/api/v1/admin/audit/verify').expect(200);
    expect(ok.body.ok).toBe(true);
    expect(ok.body.checked).toBeGreaterThanOrEqual(11);
    const { rows } = await t.db.pool.query<{ id: number }>('SELECT id FROM audit_log ORDER BY id LIMIT 1 OFFSET 3');
    const victim = rows[0]!.id;
    await t.db.pool.query(`UPDATE audit_log SET actor = 'someone-else' WHERE id = $1`, [victim]);
    const bad = await t.api().get('/api/v1/admin/audit/verify').expect(200);
    expect(bad.body).toMatchObject({ ok: false, first_bad_id: victim });
  });

  it('a deleted row breaks the chain too', async () => {
    await t.db.pool.query(`UPDATE audit_log SET actor = 'bootstrap' WHERE actor = 'someone-else'`);
    const { rows } = await t.db.pool.query<{ id: number }>('SELECT id FROM audit_log ORDER BY id LIMIT 2 OFFSET 5');
    await t.db.pool.query('DELETE FROM audit_log WHERE id = $1', [rows[0]!.id]);
    const bad = await t.api().get('/api/v1/admin/audit/verify').expect(200);
    expect(bad.body).toMatchObject({ ok: false, first_bad_id: rows[1]!.id });
  });

  it('removing the newest rows is caught by the chain head', async () => {
    await t.db.pool.query("TRUNCATE audit_log; UPDATE audit_head SET hash = repeat('0', 64)");
    await t.api().put('/api/v1/admin/platform-keys/tail').send({ api_key: 'sk-tail-1-abcdefgh' }).expect(200);
    await t.api().put('/api/v1/admin/platform-keys/tail').send({ api_key: 'sk-tail-2-abcdefgh' }).expect(200);
    await t.db.pool.query('DELETE FROM audit_log WHERE id = (SELECT max(id) FROM audit_log)');
    const bad = await t.api().get('/api/v1/admin/audit/verify').expect(200);
    expect(bad.body).toMatchObject({ ok: false, checked: 1, problem: expect.stringMatching(/head/) });
  });

  it('concurrent changes keep one unbroken chain', async () => {
    await t.db.pool.query("TRUNCATE audit_log; UPDATE audit_head SET hash = repeat('0', 64)");
    await Promise.all(Array.from({ length: 30 }, (_, i) => t.api().put(`/api/v1/admin/platform-keys/k${i % 6}`).send({ api_key: `sk-concurrent-${i}-xyz` }).expect(200)));
    const ok = await t.api().get('/api/v1/admin/audit/verify').expect(200);
    expect(ok.body).toEqual({ ok: true, checked: 30 });
  });
});
