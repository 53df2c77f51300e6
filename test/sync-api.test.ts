import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import request from 'supertest';
import { TokensStore } from '../src/features/tokens/tokens-store';
import type { SyncRuntime } from '../src/sync/sync-runtime';
import { startTestApp, type TestApp } from './helpers/app';
import { envLine, keyValue, waitForFile } from './helpers/sync';

/** The whole keyplane (test/helpers/app.ts): PUTs through the admin API, sync as main.ts wires it. */
describe('sync through the admin API', () => {
  let t: TestApp;
  let sync: SyncRuntime;
  let syncUrl: string;
  let outputDir: string;
  const tokens: Record<'viewer' | 'operator', string> = { viewer: '', operator: '' };
  const baseDir = mkdtempSync(path.join(os.tmpdir(), 'kp-sync-api-'));
  const basePath = path.join(baseDir, 'base.yaml');
  const BASE_SECRET = 'base-db-password-9876';
  const values: string[] = [];

  const envFile = () => path.join(outputDir, 'litellm.env');
  const put = (name: string, value: string) => {
    values.push(value);
    return t.api().put(`/api/v1/admin/platform-keys/${name}`).send({ api_key: value });
  };
  const as = (role: 'viewer' | 'operator' | 'admin') => {
    const agent = request.agent(syncUrl);
    return agent.set('Authorization', `Bearer ${role === 'admin' ? t.adminToken : tokens[role]}`);
  };

  beforeAll(async () => {
    writeFileSync(basePath, `general_settings:\n  database_url: postgres://litellm:${BASE_SECRET}@db:5432/litellm\nlitellm_settings:\n  drop_params: true\n`);
    t = await startTestApp({ env: { KEYPLANE_BASE_CONFIG: basePath } });
    sync = t.kp.sync!;
    syncUrl = t.kp.url!;
    outputDir = t.settings.outputDir;
    const store = new TokensStore(t.kp.pool);
    tokens.viewer = (await store.create('sync-viewer', 'viewer', 'test')).token;
    tokens.operator = (await store.create('sync-operator', 'operator', 'test')).token;
  });
  afterAll(async () => {
    await t.close();
    rmSync(baseDir, { recursive: true, force: true });
  });

  it('a PUT reaches the env file on its own', async () => {
    const value = keyValue('sk-or-v1');
    await put('openrouter', value).expect(200);
    await waitForFile(envFile(), (text) => envLine(text, 'OPENROUTER_API_KEY') === value, 5000);
  });

  it('200 concurrent PUTs over 20 keys: every key ends at its last committed version, in far fewer renders', async () => {
    let renders = 0;
    const off = sync.events.on('render:done', () => renders++);
    const names = Array.from({ length: 20 }, (_, i) => `burst-${String(i).padStart(2, '0')}`);
    const results = await Promise.all(
      Array.from({ length: 200 }, async (_, i) => {
        const name = names[i % 20]!;
        const value = keyValue(`sk-burst-${i}`);
        const res = await put(name, value);
        return { name, value, status: res.status, version: res.body.version as number };
      }),
    );
    const ok = results.filter((r) => r.status === 200);
    // Racing first PUTs of one key are retried as updates: every one commits.
    expect(ok.length).toBe(200);
    const last = new Map<string, { version: number; value: string }>();
    for (const r of ok) if ((last.get(r.name)?.version ?? 0) < r.version) last.set(r.name, r);
    expect(last.size).toBe(20);
    const want = (text: string) => [...last].every(([name, r]) => envLine(text, `${name.toUpperCase().replace(/-/g, '_')}_API_KEY`) === r.value);
    await waitForFile(envFile(), want, 10_000);
    // Let the render that wrote the last change report, then count.
    await sync.syncer.syncNow();
    off();
    expect(renders).toBeGreaterThan(0);
    expect(renders).toBeLessThan(ok.length / 4);
  });

  it('GET /sync shows the revision, the hashes on disk, the leader and the last reload (viewer)', async () => {
    await request(syncUrl).get('/api/v1/admin/sync').expect(401);
    const res = await as('viewer').get('/api/v1/admin/sync').expect(200);
    const { createHash } = await import('node:crypto');
    const plain = createHash('sha256').update(readFileSync(envFile())).digest('hex');
    // A keyed digest: the same for the same bytes, and no plain hash of the secrets anywhere.
    const keyed = t.kp.platformKeys.fingerprint(readFileSync(envFile(), 'utf8'));
    expect(res.body).toMatchObject({
      instance: t.settings.instanceId,
      leader: { instance: t.settings.instanceId, this_instance: true },
      files: { 'litellm.env': { exists: true, digest: keyed, path: envFile() } },
      revision: { env_digest: keyed, revision: expect.any(Number), changed_keys: expect.any(Array) },
      last_render: { status: expect.stringMatching(/changed|unchanged/), error: null },
      pending: { changes: 0, since: null },
    });
    // KEYPLANE_RELOAD=none: the queue records each revision as skipped (files only).
    await t.kp.reloads!.whenIdle();
    const again = await as('viewer').get('/api/v1/admin/sync').expect(200);
    expect(again.body.last_reload).toMatchObject({ reloader: 'none', last: { revision: res.body.revision.revision, status: 'skipped' } });
    for (const v of values) expect(JSON.stringify(res.body)).not.toContain(v);
    expect(JSON.stringify(res.body)).not.toContain(plain);
  });

  it('POST /sync needs operator; renders now; force_reload hands the files to reload; it is audited', async () => {
    await as('viewer').post('/api/v1/admin/sync').expect(403);
    const res = await as('operator').post('/api/v1/admin/sync').expect(200);
    expect(res.body).toMatchObject({ status: 'unchanged', revision: null, changed_files: [] });
    const handed = t.kp.events.waitFor('reload:done', () => true, 5000);
    await as('operator').post('/api/v1/admin/sync').send({ force_reload: true }).expect(200);
    await handed;
    const bad = await as('operator').post('/api/v1/admin/sync').send({ force_reload: 'yes' }).expect(400);
    expect(bad.body.errors).toEqual([{ field: 'force_reload', rule: 'must be true or false' }]);
    const audit = await t.api().get('/api/v1/admin/audit?action=sync.render').expect(200);
    expect(audit.body.items[0]).toMatchObject({ action: 'sync.render', target: 'sync', details: { force_reload: true } });
  });

  it('GET /sync/preview masks env values and base-config secrets, and diffs against the files on disk', async () => {
    const extra = 'hand-added-secret-value-1234';
    writeFileSync(envFile(), readFileSync(envFile(), 'utf8') + `HAND_EDIT=${extra}\n`);
    const res = await as('viewer').get('/api/v1/admin/sync/preview').expect(200);
    const body = JSON.stringify(res.body);
    for (const v of [...values, extra, BASE_SECRET]) expect(body).not.toContain(v);
    expect(res.body.changed).toEqual({ 'config.yaml': false, 'litellm.env': true });
    expect(res.body.env).toMatch(/^OPENROUTER_API_KEY=\*\*\*\*[!-~]{4}$/m);
    expect(res.body.config).toContain('database_url: postgres://litellm:****@db:5432/litellm');
    expect(res.body.diff['litellm.env']).toContain('-HAND_EDIT=****1234');
    expect(res.body.diff['config.yaml']).toBe('');
    // Preview writes nothing.
    expect(readFileSync(envFile(), 'utf8')).toContain(extra);
    await as('operator').post('/api/v1/admin/sync').expect(200);
    expect(readFileSync(envFile(), 'utf8')).not.toContain(extra);
  });

  it('GET /sync/revisions lists newest first and pages with before', async () => {
    const all = await as('viewer').get('/api/v1/admin/sync/revisions').expect(200);
    expect(all.body.items.length).toBeGreaterThan(2);
    const numbers = all.body.items.map((r: { revision: number }) => r.revision);
    expect(numbers).toEqual([...numbers].sort((a: number, b: number) => b - a));
    const page = await as('viewer').get('/api/v1/admin/sync/revisions?limit=2').expect(200);
    expect(page.body.items).toHaveLength(2);
    expect(page.body.next_before).toBe(numbers[1]);
    const next = await as('viewer').get(`/api/v1/admin/sync/revisions?limit=2&before=${page.body.next_before}`).expect(200);
    expect(next.body.items[0].revision).toBe(numbers[2]);
    expect(next.body.items[0]).toEqual({
      revision: numbers[2],
      config_sha256: expect.stringMatching(/^[0-9a-f]{64}$/),
      env_digest: expect.stringMatching(/^hmac-sha256:[0-9a-f]{32}$/),
      changed_files: expect.any(Array),
      trigger: expect.any(String),
      changed_keys: expect.any(Array),
      skipped: [],
      instance_id: t.settings.instanceId,
      created_at: expect.any(String),
    });
    await as('viewer').get('/api/v1/admin/sync/revisions?limit=0').expect(400);
    await as('viewer').get('/api/v1/admin/sync/revisions?nope=1').expect(400);
  });

  it('describes the sync routes in openapi.json with their access levels', async () => {
    const res = await request(syncUrl).get('/api/v1/openapi.json').expect(200);
    expect(res.body.paths['/api/v1/admin/sync'].get['x-access']).toBe('viewer');
    expect(res.body.paths['/api/v1/admin/sync'].post['x-access']).toBe('operator');
    expect(res.body.paths['/api/v1/admin/sync/preview'].get['x-access']).toBe('viewer');
    expect(res.body.paths['/api/v1/admin/sync/revisions'].get['x-access']).toBe('viewer');
  });
});
