import { randomBytes } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import request from 'supertest';
import { registerHealthRoutes } from '../src/features/health/health-routes';
import { registerPlatformKeyRoutes } from '../src/features/platform-keys/platform-keys-routes';
import { DestinationsService } from '../src/features/destinations/destinations-service';
import { ProvidersService } from '../src/features/providers/providers-service';
import { registerProviderRoutes } from '../src/features/providers/providers-routes';
import { TokensStore } from '../src/features/tokens/tokens-store';
import type { Prober } from '../src/health/prober';
import { displayUrl } from '../src/url';
import { createApp } from '../src/http/app';
import { Authenticator } from '../src/http/auth';
import { RouteTable } from '../src/http/route-table';
import { createMetrics } from '../src/metrics';
import { createTestDatabase, type TestDatabase } from './helpers/db';
import { startFakeProvider, type FakeProvider } from './helpers/fake-provider';
import { HealthEnv } from './helpers/health-env';

const GOOD = 'sk-good-key-000000000000aaaa';
const BETTER = 'sk-better-key-0000000000bbbb';
const BAD = 'sk-bad-key-00000000000000cccc';
const OTHER = 'sk-other-key-000000000000dddd';

/**
 * The admin API as main.ts builds it (createApp, RouteTable, Authenticator), with the health
 * routes registered before the providers routes, and PUT ... {validate: true} backed by the prober's probes.
 */
describe('health API', () => {
  let db: TestDatabase;
  let fake: FakeProvider;
  let env: HealthEnv;
  let prober: Prober;
  let server: Server;
  let url: string;
  const adminToken = 'adm_' + randomBytes(18).toString('base64url');
  let viewer: string;
  let operator: string;

  beforeAll(async () => {
    db = await createTestDatabase();
    fake = await startFakeProvider();
    const metrics = createMetrics();
    env = new HealthEnv(db.pool, { validate: true });
    await env.reset();
    prober = env.prober({ registry: metrics.registry, settings: { litellmUrl: fake.base('litellm') } });
    const routes = new RouteTable();
    registerHealthRoutes(routes, { store: env.store, prober, litellmUrl: displayUrl(fake.base('litellm')) });
    registerProviderRoutes(routes, new ProvidersService(db.pool, new DestinationsService(db.pool)));
    registerPlatformKeyRoutes(routes, env.keys);
    const tokens = new TokensStore(db.pool);
    viewer = (await tokens.create('v', 'viewer', 'test')).token;
    operator = (await tokens.create('o', 'operator', 'test')).token;
    const auth = new Authenticator({ adminToken, tokens, maxFailures: 100 });
    server = createServer(createApp({ log: env.log, metrics, pool: db.pool, auth, routes, version: 'test' }));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

    await env.addProvider('alpha', { apiBase: fake.base('alpha') });
    await env.addProvider('beta', { apiBase: fake.base('beta'), kind: 'anthropic' });
    await env.addProvider('gamma', { apiBase: fake.base('gamma'), kind: 'gemini', keyName: 'gamma' });
    await env.putKey('alpha', GOOD, new Date(Date.now() + 5 * 86_400_000));
    await env.putKey('beta', OTHER);
  });
  afterAll(async () => {
    await prober.stop();
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await fake.close();
    await db.drop();
  });

  const as = (token: string) => ({
    get: (path: string) => request(url).get(path).set('Authorization', `Bearer ${token}`),
    post: (path: string) => request(url).post(path).set('Authorization', `Bearer ${token}`),
    put: (path: string) => request(url).put(path).set('Authorization', `Bearer ${token}`),
  });

  it('before any round every provider is unknown (never checked); /providers/health is not taken for a slug', async () => {
    const res = await as(viewer).get('/api/v1/admin/providers/health').expect(200);
    expect(res.body.items.map((i: { slug: string; status: string; reason: string }) => `${i.slug}:${i.status}:${i.reason}`)).toEqual([
      'alpha:unknown:never_checked',
      'beta:unknown:never_checked',
      'gamma:unknown:never_checked',
    ]);
    expect(res.body.litellm).toBeNull();
    await as(viewer).get('/api/v1/admin/providers/alpha').expect(200);
  });

  it('POST /llm/health/check needs operator, runs a round and returns its results', async () => {
    await as(viewer).post('/api/v1/admin/llm/health/check').expect(403);
    await request(url).post('/api/v1/admin/llm/health/check').expect(401);
    fake.setMode('beta', 'error');
    const res = await as(operator).post('/api/v1/admin/llm/health/check').expect(200);
    expect(res.body).toMatchObject({ round: 1, trigger: 'manual' });
    const by = Object.fromEntries(res.body.providers.map((p: { slug: string }) => [p.slug, p]));
    expect(by.alpha).toMatchObject({ status: 'healthy', reason: 'ok', http_status: 200, key: { name: 'alpha', version: 1 } });
    expect(by.alpha.key.fingerprint).toMatch(/^hmac-sha256:/);
    expect(by.beta).toMatchObject({ status: 'down', reason: 'server_error', http_status: 500 });
    expect(by.gamma).toMatchObject({ status: 'unknown', reason: 'no_key' });
    expect(res.body.litellm).toMatchObject({ status: 'healthy', version: '1.81.15' });
    expect(JSON.stringify(res.body)).not.toMatch(/sk-(good|other)-key/);
  });

  it('GET /providers/health lists status, latency, the probed key and expiring-key flags', async () => {
    const res = await as(viewer).get('/api/v1/admin/providers/health').expect(200);
    const alpha = res.body.items.find((i: { slug: string }) => i.slug === 'alpha');
    const view = await env.keys.get('alpha');
    expect(alpha).toMatchObject({
      kind: 'openai',
      enabled: true,
      status: 'healthy',
      reason: 'ok',
      http_status: 200,
      degraded_ms: 2000,
      observed: { status: 'healthy', reason: 'ok' },
      key: { name: 'alpha', version: 1, fingerprint: view.fingerprint, current_version: 1, expiring: true, expired: false },
    });
    expect(alpha.latency_ms).toEqual(expect.any(Number));
    expect(Date.parse(alpha.checked_at)).not.toBeNaN();
    expect(res.body.items.find((i: { slug: string }) => i.slug === 'beta').key).toMatchObject({ expiring: false, expires_at: null });
    expect(res.body.expiring_keys).toEqual([expect.objectContaining({ name: 'alpha', version: 1, days_left: 4, expired: false })]);
    expect(res.body.litellm).toMatchObject({ url: displayUrl(fake.base('litellm')), status: 'healthy', version: '1.81.15' });
    const metrics = await request(url).get('/metrics').expect(200);
    expect(metrics.text).toContain('keyplane_provider_health_status{provider="alpha",status="healthy"} 1');
    expect(metrics.text).toContain('keyplane_platform_keys_expiring 1');
  });

  it('history pages newest first, 404 for an unknown provider, 400 for a bad query', async () => {
    await as(operator).post('/api/v1/admin/llm/health/check').expect(200);
    await as(operator).post('/api/v1/admin/llm/health/check').expect(200);
    const page1 = await as(viewer).get('/api/v1/admin/providers/beta/health/history?limit=2').expect(200);
    expect(page1.body.items).toHaveLength(2);
    expect(page1.body.items[0].id).toBeGreaterThan(page1.body.items[1].id);
    expect(page1.body.items[0]).toMatchObject({ status: 'down', observed_status: 'down', reason: 'server_error', http_status: 500, key: { name: 'beta', version: 1 } });
    const page2 = await as(viewer).get(`/api/v1/admin/providers/beta/health/history?limit=2&before=${page1.body.next_before}`).expect(200);
    expect(page2.body.items).toHaveLength(1);
    expect(page2.body.next_before).toBeNull();
    // beta was never healthy: the first failure counts at once; the stored status is down throughout.
    expect(page2.body.items[0]).toMatchObject({ status: 'down' });
    await as(viewer).get('/api/v1/admin/providers/nope/health/history').expect(404);
    const bad = await as(viewer).get('/api/v1/admin/providers/beta/health/history?limit=0&x=1').expect(400);
    expect(bad.body.errors.map((e: { field: string }) => e.field).sort()).toEqual(['query.limit', 'query.x']);
  });

  it('PUT {validate: true}: a refused key is 422 with the reason, and the current version stays active', async () => {
    fake.acceptKeys('alpha', [GOOD, BETTER]);
    const res = await as(operator).put('/api/v1/admin/platform-keys/alpha').send({ api_key: BAD, validate: true }).expect(422);
    expect(res.body.reason).toBe('auth_failed');
    expect(res.body.providers).toEqual(['alpha']);
    expect(res.body.detail).toContain('current version stays active');
    expect(JSON.stringify(res.body)).not.toContain(BAD);
    expect((await env.keys.get('alpha')).version).toBe(1);
    expect(fake.requestsFor('alpha').at(-1)!.key).toBe(BAD);

    const ok = await as(operator).put('/api/v1/admin/platform-keys/alpha').send({ api_key: BETTER, validate: true }).expect(200);
    expect(ok.body.version).toBe(2);
    env.expectNoSecrets([BAD, BETTER, GOOD]);
  });

  it('validate: Gemini and Anthropic refusals are recognised; an outage does not block a rotation; an unused key passes', async () => {
    fake.acceptKeys('gamma', ['sk-gemini-real-000000000000']);
    const gem = await as(operator).put('/api/v1/admin/platform-keys/gamma').send({ api_key: BAD, validate: true }).expect(422);
    expect(gem.body.detail).toContain('API_KEY_INVALID');
    fake.setMode('beta', 'unauthorized');
    const anth = await as(operator).put('/api/v1/admin/platform-keys/beta').send({ api_key: BAD, validate: true }).expect(422);
    expect(anth.body.detail).toContain('authentication_error');
    fake.setMode('beta', 'error');
    await as(operator).put('/api/v1/admin/platform-keys/beta').send({ api_key: BETTER, validate: true }).expect(200);
    expect(env.logs()).toContain('could not be checked everywhere');
    await as(operator).put('/api/v1/admin/platform-keys/unused').send({ api_key: BAD, validate: true }).expect(200);
    env.expectNoSecrets([BAD, BETTER]);
  });
});
