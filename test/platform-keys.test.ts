import request from 'supertest';
import { startTestApp, type TestApp } from './helpers/app';

const KEY1 = 'sk-or-v1-aaaaaaaaaaaaaaaaaaaaaaaa1111';
const KEY2 = 'sk-or-v1-bbbbbbbbbbbbbbbbbbbbbbbb2222';
const KEY3 = 'sk-or-v1-cccccccccccccccccccccccc3333';

describe('platform keys API', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp();
  });
  afterAll(async () => {
    await t.close();
  });

  it('PUT creates version 1 with the default env var, masked, fingerprinted', async () => {
    const res = await t.api().put('/api/v1/admin/platform-keys/openrouter').send({ api_key: KEY1 }).expect(200);
    expect(res.body).toMatchObject({ name: 'openrouter', env_var: 'OPENROUTER_API_KEY', masked_key: '****1111', version: 1, source: 'database' });
    expect(res.body.fingerprint).toMatch(/^hmac-sha256:[0-9a-f]{32}$/);
    expect(JSON.stringify(res.body)).not.toContain(KEY1);
    expect(res.headers.etag).toBe('"1"');
  });

  it('default env var names follow the key name', async () => {
    for (const [name, env] of [['litellm_master_key', 'LITELLM_MASTER_KEY'], ['litellm_salt_key', 'LITELLM_SALT_KEY'], ['my-groq', 'MY_GROQ_API_KEY']]) {
      const res = await t.api().put(`/api/v1/admin/platform-keys/${name}`).send({ api_key: 'sk-1234567890abcdef' }).expect(200);
      expect(res.body.env_var).toBe(env);
    }
  });

  it('rotation keeps old versions, GET is masked, the fingerprint changes with the value', async () => {
    const first = await t.api().get('/api/v1/admin/platform-keys/openrouter').expect(200);
    const res = await t.api().put('/api/v1/admin/platform-keys/openrouter').send({ api_key: KEY2 }).expect(200);
    expect(res.body.version).toBe(2);
    expect(res.body.fingerprint).not.toBe(first.body.fingerprint);
    const versions = await t.api().get('/api/v1/admin/platform-keys/openrouter/versions').expect(200);
    expect(versions.body.items.map((v: { version: number }) => v.version)).toEqual([2, 1]);
    expect(JSON.stringify(versions.body)).not.toMatch(/sk-or-v1-[ab]{5}/);
    const list = await t.api().get('/api/v1/admin/platform-keys').expect(200);
    expect(list.body.items.find((k: { name: string }) => k.name === 'openrouter').masked_key).toBe('****2222');
  });

  it('the same value twice gives the same fingerprint (an HMAC, not a random tag)', async () => {
    await t.api().put('/api/v1/admin/platform-keys/fp-a').send({ api_key: KEY3 }).expect(200);
    const b = await t.api().put('/api/v1/admin/platform-keys/fp-b').send({ api_key: KEY3 }).expect(200);
    const a = await t.api().get('/api/v1/admin/platform-keys/fp-a').expect(200);
    expect(a.body.fingerprint).toBe(b.body.fingerprint);
    const { createHash } = await import('node:crypto');
    expect(a.body.fingerprint).not.toContain(createHash('sha256').update(KEY3).digest('hex').slice(0, 32));
  });

  it('decrypted read returns the value and is audited', async () => {
    const res = await t.api().get('/api/v1/admin/platform-keys/openrouter/decrypted').expect(200);
    expect(res.body).toEqual({ api_key: KEY2, source: 'database', version: 2, env_var: 'OPENROUTER_API_KEY' });
    const audit = await t.api().get('/api/v1/admin/audit?action=platform_key.read_decrypted').expect(200);
    expect(audit.body.items[0]).toMatchObject({ actor: 'bootstrap', target: 'platform_key/openrouter', version: 2 });
    expect(JSON.stringify(audit.body)).not.toContain(KEY2);
  });

  it('rollback writes the old value as a new version', async () => {
    const res = await t.api().post('/api/v1/admin/platform-keys/openrouter/rollback').send({ version: 1 }).expect(200);
    expect(res.body).toMatchObject({ version: 3, masked_key: '****1111' });
    const dec = await t.api().get('/api/v1/admin/platform-keys/openrouter/decrypted').expect(200);
    expect(dec.body.api_key).toBe(KEY1);
    await t.api().post('/api/v1/admin/platform-keys/openrouter/rollback').send({ version: 99 }).expect(404);
  });

  it('If-Match: a stale version is 412 and changes nothing', async () => {
    const cur = await t.api().get('/api/v1/admin/platform-keys/openrouter').expect(200);
    const stale = await t.api().put('/api/v1/admin/platform-keys/openrouter').set('If-Match', '"1"').send({ api_key: KEY3 }).expect(412);
    expect(stale.headers['content-type']).toMatch(/application\/problem\+json/);
    expect(stale.body.current_version).toBe(cur.body.version);
    const after = await t.api().get('/api/v1/admin/platform-keys/openrouter').expect(200);
    expect(after.body.version).toBe(cur.body.version);
    await t.api().put('/api/v1/admin/platform-keys/openrouter').set('If-Match', `"${cur.body.version}"`).send({ api_key: KEY3 }).expect(200);
    await t.api().put('/api/v1/admin/platform-keys/openrouter').set('If-Match', 'nonsense').send({ api_key: KEY3 }).expect(400);
  });

  it('two PUTs with the same If-Match: exactly one wins', async () => {
    const cur = await t.api().get('/api/v1/admin/platform-keys/openrouter').expect(200);
    const v = cur.body.version;
    const results = await Promise.all(
      [KEY1, KEY2, KEY3, KEY1, KEY2].map((k) => t.api().put('/api/v1/admin/platform-keys/openrouter').set('If-Match', `"${v}"`).send({ api_key: k })),
    );
    const statuses = results.map((r) => r.status).sort();
    expect(statuses).toEqual([200, 412, 412, 412, 412]);
    const after = await t.api().get('/api/v1/admin/platform-keys/openrouter').expect(200);
    expect(after.body.version).toBe(v + 1);
  });

  it('60 concurrent rotations of one key: each its own version, value and audit row, written in groups', async () => {
    await t.api().put('/api/v1/admin/platform-keys/grouped').send({ api_key: 'sk-grouped-initial-0000' }).expect(200);
    const sent = Array.from({ length: 60 }, (_, i) => `sk-grouped-${String(i).padStart(3, '0')}-abcdefgh`);
    const res = await Promise.all(sent.map((v, i) => t.api().put('/api/v1/admin/platform-keys/grouped').set('X-Request-Id', `grouped-${i}`).send({ api_key: v })));
    expect(res.map((r) => r.status)).toEqual(sent.map(() => 200));
    const versions = res.map((r) => r.body.version as number);
    expect([...versions].sort((a, b) => a - b)).toEqual(Array.from({ length: 60 }, (_, i) => i + 2));
    // Rotations that waited were committed together: they share one updated_at (one statement).
    expect(new Set(res.map((r) => r.body.updated_at)).size).toBeLessThan(60);
    // Every answer names the version that holds exactly the value it sent.
    const byVersion = new Map(res.map((r, i) => [r.body.version as number, { value: sent[i]!, masked: r.body.masked_key as string, fp: r.body.fingerprint as string }]));
    const list = await t.api().get('/api/v1/admin/platform-keys/grouped/versions').expect(200);
    for (const v of list.body.items as Array<{ version: number; fingerprint: string; masked_key: string }>) {
      if (v.version === 1) continue;
      expect(v.fingerprint).toBe(byVersion.get(v.version)!.fp);
      expect(v.masked_key).toBe(`****${byVersion.get(v.version)!.value.slice(-4)}`);
    }
    const last = res.find((r) => r.body.version === 61)!;
    const dec = await t.api().get('/api/v1/admin/platform-keys/grouped/decrypted').expect(200);
    expect(dec.body.api_key).toBe(sent[res.indexOf(last)]);
    const audit = await t.db.pool.query<{ version: number; request_id: string }>(
      "SELECT version, request_id FROM audit_log WHERE target = 'platform_key/grouped' AND action = 'platform_key.put' AND version > 1 ORDER BY id",
    );
    expect(audit.rows.map((r) => r.version)).toEqual(Array.from({ length: 60 }, (_, i) => i + 2));
    expect(audit.rows.find((r) => r.version === 61)!.request_id).toBe(`grouped-${res.indexOf(last)}`);
    const verify = await t.api().get('/api/v1/admin/audit/verify').expect(200);
    expect(verify.body.ok).toBe(true);
  });

  it('two keys cannot claim one env var', async () => {
    const res = await t.api().put('/api/v1/admin/platform-keys/other').send({ api_key: KEY1, env_var: 'OPENROUTER_API_KEY' }).expect(409);
    expect(res.body.detail).toMatch(/OPENROUTER_API_KEY.*openrouter/);
    await t.api().get('/api/v1/admin/platform-keys/other').expect(404);
  });

  it('an explicit env var is kept across rotations', async () => {
    await t.api().put('/api/v1/admin/platform-keys/custom').send({ api_key: KEY1, env_var: 'MY_CUSTOM_VAR' }).expect(200);
    const res = await t.api().put('/api/v1/admin/platform-keys/custom').send({ api_key: KEY2 }).expect(200);
    expect(res.body.env_var).toBe('MY_CUSTOM_VAR');
  });

  it('bad input names each field and its rule, and writes nothing', async () => {
    const res = await t
      .api()
      .put('/api/v1/admin/platform-keys/Bad.Name')
      .send({ api_key: 'short', env_var: 'lower', expires_at: 'tomorrow', extra: 1 })
      .expect(400);
    expect(res.headers['content-type']).toMatch(/application\/problem\+json/);
    const fields = res.body.errors.map((e: { field: string }) => e.field);
    expect(fields).toEqual(expect.arrayContaining(['name']));
    const body = await t.api().put('/api/v1/admin/platform-keys/okname').send({ api_key: 'short', env_var: 'lower', expires_at: 'tomorrow', extra: 1 }).expect(400);
    const byField = Object.fromEntries(body.body.errors.map((e: { field: string; rule: string }) => [e.field, e.rule]));
    expect(byField.api_key).toMatch(/8 to 4096/);
    expect(byField.env_var).toMatch(/\^\[A-Z_\]/);
    expect(byField.expires_at).toMatch(/ISO 8601/);
    expect(byField.extra).toMatch(/not a known field/);
    for (const bad of ['sk-has space-123', 'sk-"quoted"123', "sk-'single'123", 'sk-back\\slash1', 'sk-dollar$1234', 'sk-tick`12345', 'sk-ünïcödé-123', 'x'.repeat(4097)]) {
      const r = await t.api().put('/api/v1/admin/platform-keys/okname').send({ api_key: bad }).expect(400);
      expect(r.body.errors[0].field).toBe('api_key');
      expect(JSON.stringify(r.body)).not.toContain(bad.slice(0, 12));
    }
    await t.api().get('/api/v1/admin/platform-keys/okname').expect(404);
  });

  it('413 for a body over 64 KiB, 415 for non-JSON, 400 for broken JSON, 404 for unknown routes, all problem+json', async () => {
    const big = await t.api().put('/api/v1/admin/platform-keys/big').send({ api_key: 'sk-12345678', pad: 'x'.repeat(70 * 1024) });
    expect(big.status).toBe(413);
    expect(big.headers['content-type']).toMatch(/problem\+json/);
    const text = await t.api().put('/api/v1/admin/platform-keys/big').set('Content-Type', 'text/plain').send('api_key=sk-12345678');
    expect(text.status).toBe(415);
    expect(text.headers['content-type']).toMatch(/problem\+json/);
    const broken = await t.api().put('/api/v1/admin/platform-keys/big').set('Content-Type', 'application/json').send('{"api_key": ');
    expect(broken.status).toBe(400);
    const unknown = await t.api().get('/api/v1/admin/nothing-here').expect(404);
    expect(unknown.headers['content-type']).toMatch(/problem\+json/);
    expect(unknown.body).toMatchObject({ status: 404, title: 'Not found' });
    await t.api().get('/api/v1/admin/platform-keys/big').expect(404);
  });

  it('delete removes the key; deleting again is 404; If-Match guards it', async () => {
    await t.api().put('/api/v1/admin/platform-keys/todelete').send({ api_key: KEY1 }).expect(200);
    await t.api().delete('/api/v1/admin/platform-keys/todelete').set('If-Match', '"7"').expect(412);
    await t.api().delete('/api/v1/admin/platform-keys/todelete').set('If-Match', '"1"').expect(204);
    await t.api().get('/api/v1/admin/platform-keys/todelete').expect(404);
    await t.api().delete('/api/v1/admin/platform-keys/todelete').expect(404);
  });

  it('expires_at is kept and returned', async () => {
    const at = new Date(Date.now() + 3 * 86_400_000).toISOString();
    const res = await t.api().put('/api/v1/admin/platform-keys/expiring').send({ api_key: KEY1, expires_at: at }).expect(200);
    expect(res.body.expires_at).toBe(at);
    const metrics = await request(t.kp.url!).get('/metrics').expect(200);
    expect(metrics.text).toMatch(/keyplane_keys\{state="expiring"\} [1-9]/);
  });

  it('no secret reached a log line', () => {
    const logs = t.logs();
    expect(logs.length).toBeGreaterThan(0);
    for (const k of [KEY1, KEY2, KEY3, t.adminToken]) expect(logs).not.toContain(k);
  });
});
