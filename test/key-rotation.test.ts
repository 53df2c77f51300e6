import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import request from 'supertest';
import YAML from 'yaml';
import { startTestApp, type TestApp } from './helpers/app';
import { createTestDatabase, type TestDatabase } from './helpers/db';
import { startFakeProvider, type FakeProvider } from './helpers/fake-provider';
import { startLivelinessServer } from './helpers/reload';
import { recordEvents, until } from './helpers/wait';

/** Issue 11, item 5: rotation without a gap. */

type Deployment = { model_name: string; litellm_params: Record<string, unknown> };
type Step = { step: string; at: string } & Record<string, unknown>;
type Rotation = { rotation_id: number; status: string; steps: Step[]; retire_at: string | null; new_key: Record<string, unknown>; replaces: string; error: string | null };

const OLD = 'sk-rot-old-value-00000001';
const NEW = 'sk-rot-new-value-00000002';
const BAD = 'sk-rot-bad-value-00000003';

function files(dir: string): { config: () => Deployment[]; env: () => string; bytes: () => string } {
  const read = (f: string): string => readFileSync(path.join(dir, f), 'utf8');
  return {
    config: () => ((YAML.parse(read('config.yaml')) as { model_list?: Deployment[] }).model_list ?? []),
    env: () => read('litellm.env'),
    bytes: () => read('config.yaml') + '\n----\n' + read('litellm.env'),
  };
}

/** The api_key references of a model's deployments, in the rendered order. */
const keysOf = (deployments: Deployment[], model: string): unknown[] => deployments.filter((d) => d.model_name === model).map((d) => d.litellm_params.api_key);

async function rotation(t: TestApp, slug: string, id: number): Promise<Rotation> {
  return (await t.api().get(`/api/v1/admin/providers/${slug}/rotations/${id}`).expect(200)).body as Rotation;
}

async function rotationUntil(t: TestApp, slug: string, id: number, what: (r: Rotation) => boolean, timeoutMs = 15_000): Promise<Rotation> {
  let last: Rotation | undefined;
  await until(`rotation ${id} ${what.toString()}`, async () => what((last = await rotation(t, slug, id))), timeoutMs);
  return last!;
}

/** A provider, its key and one model, set up by the admin (which approves the key for the provider's host). */
async function provider(t: TestApp, slug: string, apiBase: string, key: { name: string; value: string; env: string }, model: string): Promise<void> {
  await t.api().put(`/api/v1/admin/platform-keys/${key.name}`).send({ api_key: key.value, env_var: key.env }).expect(200);
  await t.api().put(`/api/v1/admin/providers/${slug}`).send({ kind: 'openai', api_base: apiBase, key_name: key.name }).expect(201);
  await t.api().post('/api/v1/admin/models').send({ model_name: model, provider: slug, model: 'gpt-4o-mini' }).expect(201);
}

describe('rotation: reload gated by LiteLLM readiness', () => {
  let t: TestApp;
  let fake: FakeProvider;
  let live: Awaited<ReturnType<typeof startLivelinessServer>>;
  let operator: string;
  let out: ReturnType<typeof files>;
  const as = (token: string) => ({
    post: (url: string) => request(t.kp.url!).post(url).set('Authorization', `Bearer ${token}`),
    get: (url: string) => request(t.kp.url!).get(url).set('Authorization', `Bearer ${token}`),
  });

  beforeAll(async () => {
    fake = await startFakeProvider();
    live = await startLivelinessServer();
    // LiteLLM's stand-in: a reload is done once its readiness answers 200.
    t = await startTestApp({ env: { KEYPLANE_RELOAD: 'command', KEYPLANE_RELOAD_COMMAND: 'true', KEYPLANE_LITELLM_URL: live.url } });
    out = files(t.settings.outputDir);
    operator = (await t.kp.tokens.create('op', 'operator', 'test')).token;
    fake.acceptKeys('rot', [OLD, NEW]);
    await provider(t, 'rotp', fake.base('rot'), { name: 'rot-old', value: OLD, env: 'ROT_OLD_API_KEY' }, 'rot-mini');
    await until('the old key is rendered', () => keysOf(out.config(), 'rot-mini').length === 1);
  });
  afterAll(async () => {
    live.ready = true;
    await t?.close();
    await live?.close();
    await fake?.close();
  });

  it("keeps the old key in both files until LiteLLM serves the new one, retires it, and removes it after the grace", async () => {
    live.ready = false;
    const steps = recordEvents(t.kp.events, 'rotation:step');
    const res = await as(operator).post('/api/v1/admin/providers/rotp/rotate').send({ api_key: NEW, replaces: 'rot-old', grace: '2s', name: 'rot-new' }).expect(202);
    const id = res.body.rotation_id as number;
    expect(res.headers.location).toBe(`/api/v1/admin/providers/rotp/rotations/${id}`);
    expect(res.body).toMatchObject({ provider: 'rotp', status: 'waiting_for_reload', replaces: 'rot-old', pools: ['rotp'], grace: '2s', retire_at: null });
    expect(res.body.new_key).toMatchObject({ name: 'rot-new', env_var: 'ROT_NEW_API_KEY', masked_key: expect.stringContaining('0002'), state: 'active' });
    expect(res.body.steps.map((s: Step) => s.step)).toEqual(['validated', 'added']);
    expect(res.body.steps[0].providers).toEqual(['rotp']);
    // Validation tried the new value at the provider.
    expect(fake.requestsFor('rot').some((r) => r.key === NEW)).toBe(true);

    // Rendered with both keys: one deployment each, both variables in the env file.
    // The two files are swapped one after the other: wait for both.
    await until('both keys are rendered', () => keysOf(out.config(), 'rot-mini').length === 2 && out.env().includes('ROT_NEW_API_KEY='));
    expect(keysOf(out.config(), 'rot-mini')).toEqual(['os.environ/ROT_OLD_API_KEY', 'os.environ/ROT_NEW_API_KEY']);
    expect(out.env()).toContain(`ROT_OLD_API_KEY=${OLD}\n`);
    expect(out.env()).toContain(`ROT_NEW_API_KEY=${NEW}\n`);

    // LiteLLM is not ready yet: the reload waits, and the old key stays active.
    const rendered = await rotationUntil(t, 'rotp', id, (r) => r.steps.some((s) => s.step === 'rendered'));
    const hits = live.readinessHits;
    await until('the reload polls readiness', () => live.readinessHits > hits + 2);
    const waiting = await rotation(t, 'rotp', id);
    expect(waiting.status).toBe('waiting_for_reload');
    expect(waiting.steps.map((s) => s.step)).toEqual(['validated', 'added', 'rendered']);
    expect((await t.api().get('/api/v1/admin/platform-keys/rot-old').expect(200)).body).toMatchObject({ state: 'active' });
    expect(rendered.steps[2]).toMatchObject({ revision: expect.any(Number) });

    // LiteLLM serves the new files: the old key retires (still rendered) until the deadline.
    live.ready = true;
    const retiring = await rotationUntil(t, 'rotp', id, (r) => r.status !== 'waiting_for_reload');
    expect(retiring.status).toBe('retiring');
    expect(retiring.steps.map((s) => s.step)).toEqual(['validated', 'added', 'rendered', 'served', 'retiring']);
    const old = (await t.api().get('/api/v1/admin/platform-keys/rot-old').expect(200)).body;
    expect(old).toMatchObject({ state: 'retiring', state_reason: 'rotated', replaced_by: 'rot-new', state_until: retiring.retire_at });
    expect(Date.parse(retiring.retire_at!) - Date.parse(retiring.steps[4]!.at)).toBe(2_000);
    expect(keysOf(out.config(), 'rot-mini')).toEqual(['os.environ/ROT_OLD_API_KEY', 'os.environ/ROT_NEW_API_KEY']);
    expect(out.env()).toContain(`ROT_OLD_API_KEY=${OLD}\n`);

    // After the grace: out of both files, disabled as replaced, out of the pool.
    await until('the old key leaves the files', () => keysOf(out.config(), 'rot-mini').length === 1 && !out.env().includes('ROT_OLD_API_KEY'), 15_000);
    const removedAt = Date.now();
    expect(removedAt).toBeGreaterThanOrEqual(Date.parse(retiring.retire_at!));
    expect(keysOf(out.config(), 'rot-mini')).toEqual(['os.environ/ROT_NEW_API_KEY']);
    expect(out.env()).not.toContain('ROT_OLD_API_KEY');
    expect(out.env()).toContain(`ROT_NEW_API_KEY=${NEW}\n`);
    const done = await rotationUntil(t, 'rotp', id, (r) => r.status === 'done');
    expect(done.steps.map((s) => s.step)).toEqual(['validated', 'added', 'rendered', 'served', 'retiring', 'removed']);
    expect(Date.parse(done.steps[5]!.at)).toBeGreaterThanOrEqual(Date.parse(retiring.retire_at!));
    expect((await t.api().get('/api/v1/admin/platform-keys/rot-old').expect(200)).body).toMatchObject({ state: 'disabled', state_reason: 'replaced', replaced_by: 'rot-new' });
    const p = (await t.api().get('/api/v1/admin/providers/rotp').expect(200)).body;
    expect(p).toMatchObject({ key_name: 'rot-new', keys_in_service: 1 });
    expect(p.keys.map((k: { name: string }) => k.name)).toEqual(['rot-new']);
    expect(steps.seen.filter((e) => e.rotation_id === id).map((e) => e.step)).toEqual(['rendered', 'served', 'retiring', 'removed']);
    steps.stop();

    // Each state change of the old key was alerted, naming its pool.
    const alerts = t
      .logs()
      .split('\n')
      .filter((l) => l.includes('"alert"'))
      .map((l) => (JSON.parse(l) as { event?: Record<string, unknown> }).event)
      .filter((e) => e?.type === 'key.state_changed' && e.key_name === 'rot-old');
    expect(alerts.map((e) => [e!.to, e!.reason, e!.providers])).toEqual([
      ['retiring', 'rotated', ['rotp']],
      ['disabled', 'replaced', ['rotp']],
    ]);

    // Every step is in the audit log, with no secret.
    const audit = (await t.api().get('/api/v1/admin/audit?action=provider.rotation&limit=20').expect(200)).body.items as Array<{ actor: string; details: Record<string, unknown> }>;
    const mine = audit.filter((a) => a.details.rotation_id === id).reverse();
    expect(mine.map((a) => a.details.step)).toEqual(['validated', 'added', 'rendered', 'served', 'retiring', 'removed']);
    expect(mine[0]!.actor).toContain('op');
    expect(mine[5]!.actor).toBe('keyplane');
    expect(JSON.stringify(audit)).not.toContain(NEW);
    // The operator's rotation gave the new key exactly the old key's approved destination, nothing more.
    const hosts = (await t.api().get('/api/v1/admin/platform-keys/rot-new/allowed-hosts').expect(200)).body;
    expect(hosts.allowed_hosts).toEqual([fake.url]);
  });

  it('a new key the provider refuses (401, or 402 no credit) changes nothing: database and files byte-identical', async () => {
    const snapshot = async (): Promise<string> => {
      const tables = ['platform_keys', 'platform_key_versions', 'provider_keys', 'providers', 'key_destinations', 'audit_log', 'key_rotations', 'sync_revisions'];
      const parts: string[] = [];
      for (const table of tables) parts.push(JSON.stringify((await t.kp.pool.query(`SELECT * FROM ${table} ORDER BY 1, 2`)).rows));
      // The render status row changes with every render attempt; the reload wish only with a change.
      parts.push(JSON.stringify((await t.kp.pool.query('SELECT reload_wanted, reload_done, auth_required FROM sync_state')).rows));
      return parts.join('\n');
    };
    // A provider that answers every key with 402 insufficient_quota, as OpenAI-compatible APIs do.
    const broke: Server = createServer((_req, res) => {
      res.writeHead(402, { 'content-type': 'application/json' }).end(JSON.stringify({ error: { type: 'insufficient_quota', code: 'insufficient_quota', message: 'You exceeded your current quota' } }));
    });
    await new Promise<void>((r) => broke.listen(0, '127.0.0.1', r));
    try {
      const brokeBase = `http://127.0.0.1:${(broke.address() as AddressInfo).port}/v1`;
      await provider(t, 'brokep', brokeBase, { name: 'broke-old', value: 'sk-broke-old-value-0000005', env: 'BROKE_OLD_API_KEY' }, 'broke-mini');
      await until('the broke provider is rendered', () => keysOf(out.config(), 'broke-mini').length === 1);
      await t.kp.sync!.syncer.syncNow();
      await t.kp.reloads!.whenIdle();
      const dbBefore = await snapshot();
      const filesBefore = out.bytes();
      const seen = fake.requestsFor('rot').length;

      const refused = await as(operator).post('/api/v1/admin/providers/rotp/rotate').send({ api_key: BAD, grace: '1s' }).expect(422);
      expect(refused.body).toMatchObject({ reason: 'auth_failed', providers: ['rotp'] });
      expect(refused.body.detail).toMatch(/nothing was changed/);
      expect(fake.requestsFor('rot').slice(seen).map((r) => r.key)).toEqual([BAD]);
      const noCredit = await as(operator).post('/api/v1/admin/providers/brokep/rotate').send({ api_key: 'sk-broke-new-value-0000006' }).expect(422);
      expect(noCredit.body).toMatchObject({ reason: 'quota_exhausted', providers: ['brokep'] });

      await t.kp.sync!.syncer.syncNow();
      await t.kp.reloads!.whenIdle();
      expect(await snapshot()).toBe(dbBefore);
      expect(out.bytes()).toBe(filesBefore);
      // The refused value is in no log line and no answer.
      expect(t.logs()).not.toContain(BAD);
      expect(JSON.stringify(refused.body)).not.toContain(BAD);
    } finally {
      await new Promise<void>((r) => broke.close(() => r()));
    }
  });
  it('stops, leaving the old key as it was, when the new key is not served where the old one is', async () => {
    fake.acceptKeys('rot', [NEW, 'sk-rot-newer-value-000004']);
    live.ready = false;
    const res = await as(operator).post('/api/v1/admin/providers/rotp/rotate').send({ api_key: 'sk-rot-newer-value-000004', name: 'rot-newer', grace: '1s' }).expect(202);
    expect(res.body.replaces).toBe('rot-new');
    const id = res.body.rotation_id as number;
    await rotationUntil(t, 'rotp', id, (r) => r.steps.some((s) => s.step === 'rendered'));
    // Taken out of service before LiteLLM served it.
    await as(operator).post('/api/v1/admin/platform-keys/rot-newer/disable').send({ reason: 'wrong project' }).expect(200);
    live.ready = true;
    const failed = await rotationUntil(t, 'rotp', id, (r) => r.status !== 'waiting_for_reload');
    expect(failed.status).toBe('failed');
    expect(failed.steps.map((s) => s.step)).toEqual(['validated', 'added', 'rendered', 'served', 'failed']);
    expect(failed.error).toBe('the new key rot-newer is not rendered for rotp/rot-mini (key_disabled)');
    const kept = (await t.api().get('/api/v1/admin/platform-keys/rot-new').expect(200)).body;
    expect(kept).toMatchObject({ state: 'active', state_reason: null });
    expect(kept).not.toHaveProperty('replaced_by');
    await until('only the old key is rendered', () => keysOf(out.config(), 'rot-mini').join() === 'os.environ/ROT_NEW_API_KEY' && !out.env().includes('ROT_NEWER_API_KEY'));
    expect(t.logs()).toMatch(/"level":"error".*rotation \d+ of provider rotp stopped/);
  });
});

describe('rotation: Idempotency-Key and trust', () => {
  let t: TestApp;
  let fake: FakeProvider;
  let operator: string;
  const op = (url: string) => request(t.kp.url!).post(url).set('Authorization', `Bearer ${operator}`);
  const keyCount = async (): Promise<number> => Number((await t.kp.pool.query('SELECT count(*) AS n FROM platform_keys')).rows[0].n);

  beforeAll(async () => {
    fake = await startFakeProvider();
    t = await startTestApp();
    operator = (await t.kp.tokens.create('op', 'operator', 'test')).token;
    await provider(t, 'idem', fake.base('idem'), { name: 'idem-old', value: 'sk-idem-old-value-0000001', env: 'IDEM_OLD_API_KEY' }, 'idem-mini');
    await provider(t, 'trust', fake.base('trust'), { name: 'trust-old', value: 'sk-trust-old-value-000001', env: 'TRUST_OLD_API_KEY' }, 'trust-mini');
  });
  afterAll(async () => {
    await t?.close();
    await fake?.close();
  });

  it('the same Idempotency-Key and body give the same rotation; another body with it is refused', async () => {
    const body = { api_key: 'sk-idem-new-value-0000002', grace: '1h' };
    const before = await keyCount();
    // Two at once, then one more: one rotation.
    const [a, b] = await Promise.all([op('/api/v1/admin/providers/idem/rotate').set('Idempotency-Key', 'rotate-idem-1').send(body), op('/api/v1/admin/providers/idem/rotate').set('Idempotency-Key', 'rotate-idem-1').send(body)]);
    expect([a.status, b.status]).toEqual([202, 202]);
    expect(b.body.rotation_id).toBe(a.body.rotation_id);
    expect(b.body.new_key.name).toBe(a.body.new_key.name);
    expect([a.headers['idempotent-replayed'], b.headers['idempotent-replayed']].filter(Boolean)).toEqual(['true']);
    const again = await op('/api/v1/admin/providers/idem/rotate').set('Idempotency-Key', 'rotate-idem-1').send(body).expect(202);
    expect(again.headers['idempotent-replayed']).toBe('true');
    expect(again.body.rotation_id).toBe(a.body.rotation_id);
    expect(await keyCount()).toBe(before + 1);
    const list = (await t.api().get('/api/v1/admin/providers/idem/rotations').expect(200)).body;
    expect(list.items.map((r: Rotation) => r.rotation_id)).toEqual([a.body.rotation_id]);

    const other = await op('/api/v1/admin/providers/idem/rotate').set('Idempotency-Key', 'rotate-idem-1').send({ ...body, grace: '2h' }).expect(422);
    expect(other.body.type).toMatch(/idempotency-key-reused/);
    expect(other.body.rotation_id).toBe(a.body.rotation_id);
    await op('/api/v1/admin/providers/idem/rotate').set('Idempotency-Key', 'bad key with spaces').send(body).expect(400);
    // Without the header a second rotation of the same key is refused while the first is open.
    const open = await op('/api/v1/admin/providers/idem/rotate').send({ ...body, replaces: 'idem-old' }).expect(409);
    expect(open.body.detail).toMatch(/already being replaced/);
    expect(await keyCount()).toBe(before + 1);
  });

  it('an operator cannot use rotate to send a new or an existing key where no admin approved', async () => {
    const state = async (): Promise<string> =>
      JSON.stringify([
        (await t.kp.pool.query('SELECT name, current_version FROM platform_keys ORDER BY name')).rows,
        (await t.kp.pool.query('SELECT * FROM provider_keys ORDER BY provider, position')).rows,
        (await t.kp.pool.query('SELECT key_name, destination FROM key_destinations ORDER BY 1, 2')).rows,
        (await t.kp.pool.query('SELECT count(*) FROM key_rotations')).rows,
      ]);
    // The admin revokes where trust-old may go: its provider's host is no longer approved.
    await t.api().put('/api/v1/admin/platform-keys/trust-old/allowed-hosts').send({ allowed_hosts: [] }).expect(200);
    const before = await state();
    const probes = fake.requestsFor('trust').length;
    const denied = await op('/api/v1/admin/providers/trust/rotate').send({ api_key: 'sk-trust-new-value-000002' }).expect(403);
    expect(denied.body.type).toMatch(/destination-not-approved/);
    expect(denied.body.errors[0]).toMatchObject({ field: 'provider trust', rule: expect.stringContaining(fake.url) });
    // Refused before the new value went anywhere.
    expect(fake.requestsFor('trust').length).toBe(probes);

    // An existing key cannot be the "new" key: not another provider's, not this one's.
    const existing = await op('/api/v1/admin/providers/trust/rotate').send({ api_key: 'sk-trust-new-value-000002', name: 'trust-old' }).expect(409);
    expect(existing.body.detail).toMatch(/platform key trust-old already exists/);
    const named = await op('/api/v1/admin/providers/trust/rotate').send({ api_key: 'sk-trust-new-value-000002', name: 'idem-old' }).expect(409);
    expect(named.body.detail).toMatch(/already exists/);
    const notInPool = await op('/api/v1/admin/providers/trust/rotate').send({ api_key: 'sk-trust-new-value-000002', replaces: 'idem-old' }).expect(400);
    expect(notInPool.body.errors[0]).toMatchObject({ field: 'replaces' });
    expect(await state()).toBe(before);

    // An admin decides where keys go: its rotation approves the provider's host for the new key only.
    const admin = await t.api().post('/api/v1/admin/providers/trust/rotate').send({ api_key: 'sk-trust-new-value-000002', name: 'trust-new', grace: '1h' }).expect(202);
    expect(admin.body.steps[1]).toMatchObject({ step: 'added', approved_destinations: [`trust-new -> ${fake.url}`] });
    expect((await t.api().get('/api/v1/admin/platform-keys/trust-new/allowed-hosts').expect(200)).body.allowed_hosts).toEqual([fake.url]);
    expect((await t.api().get('/api/v1/admin/platform-keys/trust-old/allowed-hosts').expect(200)).body.allowed_hosts).toEqual([]);
  });
  it('a key held by several pools is replaced in each; a disabled one goes at once, never back in service', async () => {
    const out = files(t.settings.outputDir);
    await t.api().put('/api/v1/admin/platform-keys/shared-old').send({ api_key: 'sk-shared-old-value-00001', env_var: 'SHARED_OLD_API_KEY' }).expect(200);
    for (const slug of ['multi-a', 'multi-b']) {
      await t.api().put(`/api/v1/admin/providers/${slug}`).send({ kind: 'openai', api_base: fake.base(slug), key_name: 'shared-old' }).expect(201);
      await t.api().post('/api/v1/admin/models').send({ model_name: `${slug}-mini`, provider: slug, model: 'gpt-4o-mini' }).expect(201);
    }
    // Revoked at 3 a.m.: both providers are out of keys.
    await t.api().post('/api/v1/admin/platform-keys/shared-old/disable').send({ reason: 'revoked by the provider' }).expect(200);
    const res = await op('/api/v1/admin/providers/multi-a/rotate').send({ api_key: 'sk-shared-new-value-00002', name: 'shared-new', grace: '1h' }).expect(202);
    expect(res.body).toMatchObject({ replaces: 'shared-old', pools: ['multi-a', 'multi-b'] });
    expect(res.body.steps[0].providers).toEqual(['multi-a', 'multi-b']);
    const done = await rotationUntil(t, 'multi-a', res.body.rotation_id, (r) => r.status !== 'waiting_for_reload');
    expect(done.status).toBe('done');
    expect(done.steps.map((s) => s.step)).toEqual(['validated', 'added', 'rendered', 'served', 'removed']);
    expect(done.steps[4]).toMatchObject({ pools: ['multi-a', 'multi-b'], note: 'shared-old was out of service already' });
    const changes = (await t.api().get('/api/v1/admin/audit?action=platform_key.state&limit=50').expect(200)).body.items
      .filter((a: { target: string }) => a.target === 'platform_key/shared-old')
      .map((a: { details: { to: string; reason: string } }) => `${a.details.to}/${a.details.reason}`)
      .reverse();
    expect(changes).toEqual(['disabled/manual', 'disabled/replaced']);
    for (const slug of ['multi-a', 'multi-b']) {
      const p = (await t.api().get(`/api/v1/admin/providers/${slug}`).expect(200)).body;
      expect(p).toMatchObject({ key_name: 'shared-new', keys_in_service: 1 });
      expect(p.keys.map((k: { name: string }) => k.name)).toEqual(['shared-new']);
    }
    await until('both models are served by the new key', () => ['multi-a-mini', 'multi-b-mini'].every((m) => keysOf(out.config(), m).join() === 'os.environ/SHARED_NEW_API_KEY'));
  });
});

describe('rotation: the deadline survives a restart', () => {
  let db: TestDatabase;
  let fake: FakeProvider;
  let outputDir: string;
  const apps: TestApp[] = [];

  beforeAll(async () => {
    db = await createTestDatabase();
    fake = await startFakeProvider();
    outputDir = mkdtempSync(path.join(os.tmpdir(), 'keyplane-rotation-'));
  });
  afterAll(async () => {
    for (const a of apps) await a.close().catch(() => undefined);
    await fake?.close();
    await db?.drop();
    rmSync(outputDir, { recursive: true, force: true });
  });

  it('a keyplane started after the first stopped removes the retiring key at its deadline', async () => {
    const env = { KEYPLANE_OUTPUT_DIR: outputDir, KEYPLANE_INSTANCE_ID: 'first' };
    const first = await startTestApp({ db, env });
    apps.push(first);
    const out = files(outputDir);
    await provider(first, 'restart', fake.base('restart'), { name: 'rs-old', value: 'sk-rs-old-value-000000001', env: 'RS_OLD_API_KEY' }, 'rs-mini');
    const res = await first.api().post('/api/v1/admin/providers/restart/rotate').send({ api_key: 'sk-rs-new-value-000000002', name: 'rs-new', grace: '3s' }).expect(202);
    const id = res.body.rotation_id as number;
    const retiring = await rotationUntil(first, 'restart', id, (r) => r.status === 'retiring');
    await first.close();
    apps.splice(apps.indexOf(first), 1);
    // Still both, with nobody running: the deadline is only in the database.
    expect(keysOf(out.config(), 'rs-mini')).toEqual(['os.environ/RS_OLD_API_KEY', 'os.environ/RS_NEW_API_KEY']);

    const second = await startTestApp({ db, env: { ...env, KEYPLANE_INSTANCE_ID: 'second' }, masterKey: first.masterKey });
    apps.push(second);
    const steps = recordEvents(second.kp.events, 'rotation:step');
    await until('the old key leaves the files', () => keysOf(out.config(), 'rs-mini').length === 1 && !out.env().includes('RS_OLD_API_KEY'), 15_000);
    expect(Date.now()).toBeGreaterThanOrEqual(Date.parse(retiring.retire_at!));
    expect(keysOf(out.config(), 'rs-mini')).toEqual(['os.environ/RS_NEW_API_KEY']);
    expect(out.env()).not.toContain('RS_OLD_API_KEY');
    const done = await rotationUntil(second, 'restart', id, (r) => r.status === 'done');
    expect(done.steps.map((s) => s.step)).toEqual(['validated', 'added', 'rendered', 'served', 'retiring', 'removed']);
    // The second instance took the last step.
    expect((await steps.waitFor((e) => e.rotation_id === id && e.step === 'removed')).status).toBe('done');
    steps.stop();
  });
});
