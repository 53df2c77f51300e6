import { createHash } from 'node:crypto';
import request from 'supertest';
import { startTestApp, findRepeats, type TestApp } from './helpers/app';
import { FakeLitellm } from './helpers/fake-litellm';

/** Issue 12, items 1 and 3: virtual keys through LiteLLM's /key/* API (the fake is built from LiteLLM 1.81's source). */

const MASTER = 'sk-litellm-master-vk-0001';
const sha256 = (s: string): string => createHash('sha256').update(s).digest('hex');

type View = Record<string, unknown> & { alias: string; status: string; token: string; spend: number | null };

function as(t: TestApp, token: string) {
  const auth = (r: request.Test): request.Test => r.set('Authorization', `Bearer ${token}`);
  return {
    get: (url: string) => auth(request(t.kp.url!).get(url)),
    post: (url: string) => auth(request(t.kp.url!).post(url)),
    patch: (url: string) => auth(request(t.kp.url!).patch(url)),
    delete: (url: string) => auth(request(t.kp.url!).delete(url)),
  };
}

/** A key made in LiteLLM directly (its admin UI, say), behind keyplane's back. */
async function generateInLitellm(fake: FakeLitellm, body: Record<string, unknown>): Promise<{ key: string; token: string }> {
  const res = await fetch(`${fake.url}/key/generate`, { method: 'POST', headers: { authorization: `Bearer ${MASTER}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
  return (await res.json()) as { key: string; token: string };
}

describe('virtual keys against a LiteLLM with its database', () => {
  let fake: FakeLitellm;
  let t: TestApp;
  let operator: string;
  let viewer: string;

  beforeAll(async () => {
    fake = await FakeLitellm.start({ masterKey: MASTER, upperboundMaxBudget: 1000 });
    // Every key the fake hands out is scanned for when the app stops: at most one response, no log line, nowhere in the database.
    t = await startTestApp({ env: { KEYPLANE_LITELLM_URL: fake.url, KEYPLANE_LITELLM_MASTER_KEY: MASTER }, shownOnce: () => fake.vkeys.issued });
    operator = (await t.kp.tokens.create('op', 'operator', 'test')).token;
    viewer = (await t.kp.tokens.create('view', 'viewer', 'test')).token;
  });
  afterAll(async () => {
    await t?.close();
    await fake?.stop();
  });

  it('creates a key in LiteLLM and shows it once: keyplane keeps the alias, the hash and the settings', async () => {
    const body = { alias: 'team-search', models: ['gpt-4o-mini'], max_budget: 25, budget_duration: '30d', rpm_limit: 60, tpm_limit: 100000, duration: '90d', metadata: { team: 'search' } };
    const res = await t.api().post('/api/v1/admin/virtual-keys').send(body).expect(201);
    expect(res.headers.location).toBe('/api/v1/admin/virtual-keys/team-search');
    const key = res.body.key as string;
    expect(key).toMatch(/^sk-[A-Za-z0-9_-]{22}$/);
    expect(res.body).toMatchObject({ alias: 'team-search', status: 'active', token: sha256(key), masked_key: `sk-...${key.slice(-4)}`, models: ['gpt-4o-mini'], max_budget: 25, rpm_limit: 60, spend: 0, retiring: [] });
    expect(res.body.message).toMatch(/only time the key is shown/);
    // What LiteLLM was asked for, with keyplane's tag in the metadata.
    const inLitellm = fake.vkeys.keys.get(sha256(key))!;
    expect(inLitellm).toMatchObject({ key_alias: 'team-search', models: ['gpt-4o-mini'], max_budget: 25, budget_duration: '30d', rpm_limit: 60, tpm_limit: 100000, metadata: { team: 'search', keyplane_op: expect.stringMatching(/^create:/) } });
    expect(Date.parse(inLitellm.expires!)).toBeGreaterThan(Date.now() + 89 * 86_400_000);
    expect(fake.vkeys.accepts(key)).toBe(true);

    // Later answers never carry the key, only its hash.
    const one = await t.api().get('/api/v1/admin/virtual-keys/team-search').expect(200);
    expect(one.body).not.toHaveProperty('key');
    expect(one.body).toMatchObject({ status: 'active', token: sha256(key), spend: 0, metadata: { team: 'search' }, expires_at: inLitellm.expires });
    const { rows } = await t.db.pool.query('SELECT details FROM audit_log WHERE action = $1', ['virtual_key.create']);
    expect(rows[0].details).toMatchObject({ token: sha256(key), max_budget: 25 });
    await t.api().get('/api/v1/admin/audit?limit=50').expect(200);
    // The same alias again: keyplane's own record answers, LiteLLM is not asked.
    const before = fake.vkeys.issued.length;
    const again = await t.api().post('/api/v1/admin/virtual-keys').send({ alias: 'team-search' }).expect(409);
    expect(again.body.detail).toMatch(/virtual key team-search exists/);
    expect(fake.vkeys.issued.length).toBe(before);
  });

  it('lists keyplane\'s records reconciled with LiteLLM: a key deleted in LiteLLM behind keyplane\'s back shows as gone; spend comes from LiteLLM', async () => {
    const made: Record<string, string> = {};
    for (const alias of ['list-a', 'list-b', 'list-c']) made[alias] = (await t.api().post('/api/v1/admin/virtual-keys').send({ alias, max_budget: 10 }).expect(201)).body.token;
    fake.vkeys.keys.get(made['list-a']!)!.spend = 1.25;
    fake.vkeys.keys.delete(made['list-b']!);
    fake.clearRequests();
    const all = await as(t, viewer).get('/api/v1/admin/virtual-keys').expect(200);
    const byAlias = new Map((all.body.items as View[]).map((v) => [v.alias, v]));
    expect(byAlias.get('list-a')).toMatchObject({ status: 'active', spend: 1.25, max_budget: 10 });
    expect(byAlias.get('list-b')).toMatchObject({ status: 'gone', spend: null, token: made['list-b'] });
    expect(byAlias.get('list-c')).toMatchObject({ status: 'active', spend: 0 });
    expect(all.body.next_cursor).toBeNull();
    // LiteLLM's list was read (one page holds every key), and only the missing key was asked about again.
    expect(fake.requests.filter((r) => r.path.startsWith('/key/list')).map((r) => r.path)).toEqual([expect.stringContaining('return_full_object=true')]);
    expect(fake.requests.filter((r) => r.path.startsWith('/key/info')).map((r) => r.path)).toEqual([`/key/info?key=${made['list-b']}`]);

    // Paged like every list; a short page asks /key/info per key instead of paging all of LiteLLM's keys.
    for (let i = 0; i < 3; i++) await generateInLitellm(fake, { key_alias: `other-${i}` });
    const p1 = await t.api().get('/api/v1/admin/virtual-keys?limit=2').expect(200);
    expect((p1.body.items as View[]).map((v) => v.alias)).toEqual(['list-a', 'list-b']);
    fake.clearRequests();
    const p2 = await t.api().get(`/api/v1/admin/virtual-keys?limit=1&cursor=${p1.body.next_cursor}`).expect(200);
    expect((p2.body.items as View[]).map((v) => [v.alias, v.status])).toEqual([['list-c', 'active']]);
    expect(fake.requests.map((r) => r.path.split('?')[0])).toEqual(['/key/info']);
  });

  it('changes budgets and limits in LiteLLM (/key/update), and refuses what LiteLLM cannot do', async () => {
    const token = (await t.api().post('/api/v1/admin/virtual-keys').send({ alias: 'upd', models: ['a'], max_budget: 5, rpm_limit: 10 }).expect(201)).body.token as string;
    const res = await t.api().patch('/api/v1/admin/virtual-keys/upd').send({ max_budget: 50, rpm_limit: null, tpm_limit: 500, duration: '1d', models: ['a', 'b'], metadata: { owner: 'x' } }).expect(200);
    expect(res.body).toMatchObject({ alias: 'upd', status: 'active', max_budget: 50, rpm_limit: null, tpm_limit: 500, duration: '1d', models: ['a', 'b'], metadata: { owner: 'x' } });
    const row = fake.vkeys.keys.get(token)!;
    expect(row).toMatchObject({ max_budget: 50, rpm_limit: null, tpm_limit: 500, models: ['a', 'b'], metadata: { owner: 'x' } });
    expect(res.body.expires_at).toBe(row.expires);
    // The update went by the hash: LiteLLM never got a key from keyplane.
    expect(fake.requests.filter((r) => r.path === '/key/update').map((r) => (r.body as { key: string }).key)).toEqual([token]);
    await t.api().patch('/api/v1/admin/virtual-keys/upd').send({ max_budget: null, duration: null }).expect(200);
    expect(fake.vkeys.keys.get(token)).toMatchObject({ max_budget: null, expires: null });

    const empty = await t.api().patch('/api/v1/admin/virtual-keys/upd').send({}).expect(400);
    expect(empty.body.detail).toMatch(/must change at least one/);
    // LiteLLM ignores a null budget_duration: keyplane does not pretend it took it away.
    expect((await t.api().patch('/api/v1/admin/virtual-keys/upd').send({ budget_duration: null }).expect(400)).body.errors).toEqual([{ field: 'budget_duration', rule: 'must be a string' }]);
    expect((await t.api().patch('/api/v1/admin/virtual-keys/upd').send({ metadata: { keyplane_op: 'x' } }).expect(400)).body.errors[0].field).toBe('metadata.keyplane_op');
    await t.api().patch('/api/v1/admin/virtual-keys/nope').send({ max_budget: 1 }).expect(404);

    // Deleted in LiteLLM meanwhile: LiteLLM's 404 is a 409 that says what to do.
    fake.vkeys.keys.delete(token);
    const gone = await t.api().patch('/api/v1/admin/virtual-keys/upd').send({ max_budget: 1 }).expect(409);
    expect(gone.body).toMatchObject({ type: 'https://keyplane.dev/problems/virtual-key-gone' });
    expect(gone.body.detail).toMatch(/deleted there.*DELETE it here/);
  });

  it('deletes the key in LiteLLM (/key/delete), also one LiteLLM lost already; an operator may delete, only an admin may create or change', async () => {
    const token = (await t.api().post('/api/v1/admin/virtual-keys').send({ alias: 'del' }).expect(201)).body.token as string;
    await as(t, viewer).delete('/api/v1/admin/virtual-keys/del').expect(403);
    await as(t, operator).post('/api/v1/admin/virtual-keys').send({ alias: 'by-operator' }).expect(403);
    await as(t, operator).patch('/api/v1/admin/virtual-keys/del').send({ max_budget: 1e6 }).expect(403);
    await as(t, operator).post('/api/v1/admin/virtual-keys/del/rotate').send({}).expect(403);
    await as(t, operator).delete('/api/v1/admin/virtual-keys/del').expect(204);
    expect(fake.vkeys.keys.has(token)).toBe(false);
    expect(fake.requests.filter((r) => r.path === '/key/delete').at(-1)!.body).toEqual({ keys: [token] });
    await t.api().get('/api/v1/admin/virtual-keys/del').expect(404);
    const { rows } = await t.db.pool.query(`SELECT actor, details FROM audit_log WHERE action = 'virtual_key.delete' AND target = 'virtual_key/del'`);
    expect(rows).toEqual([{ actor: 'token:op', details: expect.objectContaining({ token }) }]);

    const lost = (await t.api().post('/api/v1/admin/virtual-keys').send({ alias: 'del-lost' }).expect(201)).body.token as string;
    fake.vkeys.keys.delete(lost);
    await t.api().delete('/api/v1/admin/virtual-keys/del-lost').expect(204);
    await t.api().get('/api/v1/admin/virtual-keys/del-lost').expect(404);
    await t.api().delete('/api/v1/admin/virtual-keys/del-lost').expect(404);
  });

  it("passes LiteLLM's errors on as problem+json with LiteLLM's message", async () => {
    // An alias LiteLLM already has (made there directly): its 400 is a 409, and keyplane keeps nothing.
    await generateInLitellm(fake, { key_alias: 'taken-in-litellm' });
    const taken = await t.api().post('/api/v1/admin/virtual-keys').send({ alias: 'taken-in-litellm' }).expect(409);
    expect(taken.headers['content-type']).toMatch(/application\/problem\+json/);
    expect(taken.body).toMatchObject({ type: 'https://keyplane.dev/problems/litellm-conflict', status: 409, litellm_status: 400 });
    expect(taken.body.detail).toContain("Key with alias 'taken-in-litellm' already exists. Unique key aliases across all keys are required.");
    await t.api().get('/api/v1/admin/virtual-keys/taken-in-litellm').expect(404);

    // A limit of LiteLLM's own config: 422 with LiteLLM's words (unwrapped from Python's dict).
    const over = await t.api().post('/api/v1/admin/virtual-keys').send({ alias: 'too-rich', max_budget: 5000 }).expect(422);
    expect(over.body).toMatchObject({ type: 'https://keyplane.dev/problems/litellm-refused', litellm_status: 400 });
    expect(over.body.detail).toContain('max_budget is over max limit set in config - user_value=5000.0; max_value=1000');
    expect(over.body.detail).not.toContain("{'error'");
    // The alias is free again: the refusal left nothing behind.
    await t.api().post('/api/v1/admin/virtual-keys').send({ alias: 'too-rich', max_budget: 500 }).expect(201);

    // LiteLLM failing (its database away for a moment): 502 with its message, and keyplane's record stays.
    const token = (await t.api().get('/api/v1/admin/virtual-keys/too-rich').expect(200)).body.token as string;
    fake.vkeys.failNextDeletes(1);
    const failed = await t.api().delete('/api/v1/admin/virtual-keys/too-rich').expect(502);
    expect(failed.body).toMatchObject({ type: 'https://keyplane.dev/problems/litellm-error', litellm_status: 500 });
    expect(failed.body.detail).toContain("Can't reach database server");
    expect(fake.vkeys.keys.has(token)).toBe(true);
    await t.api().get('/api/v1/admin/virtual-keys/too-rich').expect(200);
    // Keyplane's own rules come first: LiteLLM is not asked.
    fake.clearRequests();
    const bad = await t.api().post('/api/v1/admin/virtual-keys').send({ alias: 'bad/alias', max_budget: -1, duration: '10', rpm_limit: 1.5 }).expect(400);
    expect(bad.body.errors.map((e: { field: string }) => e.field).sort()).toEqual(['alias', 'duration', 'max_budget', 'rpm_limit']);
    expect(fake.requests).toEqual([]);
  });

  it('the secret scan catches a key shown twice, logged, or stored', () => {
    const key = 'sk-abcdefghijklmnopqrstuv';
    expect(findRepeats([key], '', [{ where: 'POST /x', text: key }], '')).toEqual([]);
    expect(findRepeats([key], '', [{ where: 'POST /x', text: key }, { where: 'GET /x', text: `{"k":"${key}"}` }], '')).toEqual([expect.stringContaining('shown 2 times (POST /x, GET /x)')]);
    expect(findRepeats([key], `log ${key}`, [], '')).toEqual([expect.stringContaining('the log')]);
    expect(findRepeats([key], '', [], `(1,${key})`)).toEqual([expect.stringContaining('the database')]);
  });
});

describe('virtual keys against a LiteLLM without a database, or without a master key', () => {
  let fake: FakeLitellm;
  const apps: TestApp[] = [];

  beforeAll(async () => {
    fake = await FakeLitellm.start({ masterKey: MASTER, database: false });
  });
  afterAll(async () => {
    for (const a of apps) await a.close();
    await fake?.stop();
  });

  it('answers 409 saying LiteLLM needs its database, for every write; reads show the record as unknown', async () => {
    const t = await startTestApp({ env: { KEYPLANE_LITELLM_URL: fake.url, KEYPLANE_LITELLM_MASTER_KEY: MASTER } });
    apps.push(t);
    const res = await t.api().post('/api/v1/admin/virtual-keys').send({ alias: 'no-db' }).expect(409);
    expect(res.body).toMatchObject({ type: 'https://keyplane.dev/problems/litellm-no-database', litellm_status: 500 });
    expect(res.body.detail).toMatch(/virtual keys live in LiteLLM's database.*DATABASE_URL/);
    expect(res.body.detail).toContain('DB not connected');
    expect((await t.api().get('/api/v1/admin/virtual-keys').expect(200)).body.items).toEqual([]);
    // A record from when LiteLLM still had its database: each endpoint's own "no database" message is recognised.
    await t.db.pool.query(`INSERT INTO virtual_keys (alias, status, token, op, created_by) VALUES ('kept', 'active', $1, 'create:x', 'test')`, [sha256('sk-kept')]);
    for (const [req, said] of [
      [t.api().patch('/api/v1/admin/virtual-keys/kept').send({ max_budget: 1 }), 'Not connected to DB'],
      [t.api().delete('/api/v1/admin/virtual-keys/kept'), 'Not connected to DB'],
      [t.api().post('/api/v1/admin/virtual-keys/kept/rotate').send({ grace_period: '1h' }), 'Database not connected'],
    ] as const) {
      const r = await req.expect(409);
      expect(r.body.type).toBe('https://keyplane.dev/problems/litellm-no-database');
      expect(r.body.detail).toContain(said);
    }
    const kept = await t.api().get('/api/v1/admin/virtual-keys/kept').expect(200);
    expect(kept.body).toMatchObject({ status: 'unknown', spend: null });
    expect(kept.body.litellm_error).toMatch(/LiteLLM's database/);
    // The refused rotation is not remembered.
    expect((await t.db.pool.query('SELECT count(*)::int AS n FROM virtual_key_rotations')).rows[0].n).toBe(0);
  });

  it('answers 409 without a master key, and signs in with the stored litellm_master_key when there is one', async () => {
    const withDb = await FakeLitellm.start({ masterKey: MASTER });
    try {
      const t = await startTestApp({ env: { KEYPLANE_LITELLM_URL: withDb.url }, shownOnce: () => withDb.vkeys.issued });
      apps.push(t);
      const res = await t.api().post('/api/v1/admin/virtual-keys').send({ alias: 'needs-key' }).expect(409);
      expect(res.body.type).toBe('https://keyplane.dev/problems/litellm-not-configured');
      expect(res.body.detail).toMatch(/KEYPLANE_LITELLM_MASTER_KEY.*litellm_master_key/);
      await t.api().put('/api/v1/admin/platform-keys/litellm_master_key').send({ api_key: MASTER }).expect(200);
      const made = await t.api().post('/api/v1/admin/virtual-keys').send({ alias: 'needs-key' }).expect(201);
      expect(withDb.vkeys.accepts(made.body.key)).toBe(true);
      // A master key LiteLLM refuses is keyplane's configuration to fix: 502, never LiteLLM's echo of the key.
      await t.api().put('/api/v1/admin/platform-keys/litellm_master_key').send({ api_key: 'sk-litellm-wrong-master-0002' }).expect(200);
      await t.db.pool.query('UPDATE litellm_api_state SET known_master_version = NULL');
      const refused = await t.api().post('/api/v1/admin/virtual-keys').send({ alias: 'refused' }).expect(502);
      expect(refused.body.type).toBe('https://keyplane.dev/problems/litellm-unauthorized');
      expect(JSON.stringify(refused.body)).not.toContain('0002');
    } finally {
      await apps.pop()?.close();
      await withDb.stop();
    }
  });
});
