import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import request from 'supertest';
import { SignJWT, exportJWK, generateKeyPair, type KeyLike } from 'jose';
import { startTestApp, type TestApp } from './helpers/app';
import type { Role } from '../src/http/principal';

const JWT_SECRET = 'jwt-secret-for-tests-0123456789abcdef';

function concrete(path: string): string {
  return path
    .replace(':name', 'openrouter')
    .replace(':slug', 'openai')
    .replace(':id', '00000000-0000-4000-8000-000000000000')
    .replace(':provider', 'openai');
}

describe('auth', () => {
  let t: TestApp;
  const tokens: Partial<Record<Role, string>> = {};
  beforeAll(async () => {
    t = await startTestApp({ env: { KEYPLANE_JWT_SECRET: JWT_SECRET, KEYPLANE_AUTH_MAX_FAILURES: '1000' } });
    for (const role of ['admin', 'operator', 'viewer'] as Role[]) {
      const res = await t.api().post('/api/v1/admin/tokens').send({ name: `${role}-token`, role }).expect(201);
      expect(res.body.token).toMatch(/^kp_/);
      tokens[role] = res.body.token;
    }
    await t.api().put('/api/v1/admin/platform-keys/openrouter').send({ api_key: 'sk-or-v1-authmatrix-0000' }).expect(200);
  });
  afterAll(async () => {
    await t.close();
  });

  it('every route: 401 without credentials, 403 below its role, through at or above it, never a 5xx', async () => {
    const rank: Record<string, number> = { viewer: 1, operator: 2, admin: 3 };
    const routes = t.kp.routes.routes.filter((r) => r.access !== 'public');
    expect(routes.length).toBeGreaterThan(20);
    // "Through" means the route itself answered: 2xx, 3xx or a 4xx of its own. 401/403 would be the
    // auth layer, 429 the failed-auth limiter (the request never reached the route), a 5xx a bug.
    const through = (status: number) => status >= 200 && status < 500 && ![401, 403, 429].includes(status);
    const wrong: Array<[string, string, string, number]> = [];
    let passed = 0;
    for (const r of routes) {
      const path = concrete(r.path);
      const call = (token?: string) => {
        const req = request(t.kp.url!)[r.method](path);
        if (token) req.set('Authorization', `Bearer ${token}`);
        // The live event stream stays open: its status is all this needs, so the answer is dropped at once.
        if (r.path === '/api/v1/admin/events') {
          req.buffer(false).parse((res, done) => {
            (res as unknown as { destroy(): void }).destroy();
            done(null, undefined);
          });
        }
        return r.method === 'get' || r.method === 'delete' ? req : req.send({});
      };
      const anon = await call();
      if (anon.status !== 401) wrong.push([r.method, r.path, 'anonymous', anon.status]);
      const bogus = await call('kp_not-a-real-token');
      if (bogus.status !== 401) wrong.push([r.method, r.path, 'bogus token', bogus.status]);
      for (const role of ['viewer', 'operator', 'admin'] as Role[]) {
        const res = await call(tokens[role]);
        const allowed = r.access === 'any' || rank[role]! >= rank[r.access]!;
        if (allowed ? !through(res.status) : res.status !== 403) wrong.push([r.method, r.path, role, res.status]);
        if (allowed && through(res.status)) passed++;
        expect(res.headers['content-type'] ?? '').not.toMatch(/html/);
      }
    }
    expect(wrong).toEqual([]);
    // Every route lets at least admin through, so the "through" branch ran for each of them.
    expect(passed).toBeGreaterThanOrEqual(routes.length);
  });

  it('viewer reads masked keys but not the decrypted one', async () => {
    // The matrix above may have deleted it.
    await t.api().put('/api/v1/admin/platform-keys/openrouter').send({ api_key: 'sk-or-v1-authmatrix-0000' }).expect(200);
    const v = await request(t.kp.url!).get('/api/v1/admin/platform-keys/openrouter').set('Authorization', `Bearer ${tokens.viewer}`).expect(200);
    expect(v.body.masked_key).toBe('****0000');
    const d = await request(t.kp.url!).get('/api/v1/admin/platform-keys/openrouter/decrypted').set('Authorization', `Bearer ${tokens.operator}`).expect(403);
    expect(d.headers['content-type']).toMatch(/problem\+json/);
    expect(d.body.detail).toMatch(/admin/);
  });

  it('tokens are listed without their value, stored as SHA-256, and revocable', async () => {
    const list = await t.api().get('/api/v1/admin/tokens').expect(200);
    expect(list.body.items.length).toBeGreaterThanOrEqual(3);
    expect(JSON.stringify(list.body)).not.toContain(tokens.viewer!);
    const stored = await t.db.pool.query('SELECT encode(token_sha256, $1) AS h FROM api_tokens', ['hex']);
    const { createHash } = await import('node:crypto');
    expect(stored.rows.map((r) => r.h)).toContain(createHash('sha256').update(tokens.viewer!).digest('hex'));
    const created = await t.api().post('/api/v1/admin/tokens').send({ name: 'short-lived', role: 'viewer' }).expect(201);
    await request(t.kp.url!).get('/api/v1/admin/platform-keys').set('Authorization', `Bearer ${created.body.token}`).expect(200);
    await t.api().delete(`/api/v1/admin/tokens/${created.body.id}`).expect(200);
    await request(t.kp.url!).get('/api/v1/admin/platform-keys').set('Authorization', `Bearer ${created.body.token}`).expect(401);
  });

  it('HS256 JWTs: role from `role`, user from `sub`; bad signature, expiry or role is 401', async () => {
    const key = new TextEncoder().encode(JWT_SECRET);
    const sign = (claims: Record<string, unknown>, secret = key, exp = '5m') =>
      new SignJWT(claims).setProtectedHeader({ alg: 'HS256' }).setSubject('alice@example.com').setIssuedAt().setExpirationTime(exp).sign(secret);
    const op = await sign({ role: 'operator' });
    const put = await request(t.kp.url!).put('/api/v1/admin/platform-keys/jwt-made').set('Authorization', `Bearer ${op}`).send({ api_key: 'sk-jwt-made-12345678' }).expect(200);
    expect(put.body.version).toBe(1);
    const audit = await t.api().get('/api/v1/admin/audit?target=platform_key/jwt-made').expect(200);
    expect(audit.body.items[0].actor).toBe('jwt:alice@example.com');
    const viewer = await sign({ role: 'viewer' });
    await request(t.kp.url!).put('/api/v1/admin/platform-keys/jwt-made').set('Authorization', `Bearer ${viewer}`).send({ api_key: 'sk-jwt-made-12345678' }).expect(403);
    const forged = await sign({ role: 'admin' }, new TextEncoder().encode('another-secret-another-secret-0000'));
    await request(t.kp.url!).get('/api/v1/admin/platform-keys').set('Authorization', `Bearer ${forged}`).expect(401);
    const expired = await new SignJWT({ role: 'admin' }).setProtectedHeader({ alg: 'HS256' }).setSubject('bob').setExpirationTime(Math.floor(Date.now() / 1000) - 60).sign(key);
    await request(t.kp.url!).get('/api/v1/admin/platform-keys').set('Authorization', `Bearer ${expired}`).expect(401);
    const noRole = await sign({});
    await request(t.kp.url!).get('/api/v1/admin/platform-keys').set('Authorization', `Bearer ${noRole}`).expect(401);
    const superRole = await sign({ role: 'root' });
    await request(t.kp.url!).get('/api/v1/admin/platform-keys').set('Authorization', `Bearer ${superRole}`).expect(401);
  });

  it('BYOK keys belong to the JWT subject', async () => {
    const key = new TextEncoder().encode(JWT_SECRET);
    const as = (sub: string) => new SignJWT({ role: 'viewer' }).setProtectedHeader({ alg: 'HS256' }).setSubject(sub).setExpirationTime('5m').sign(key);
    const alice = await as('alice');
    const bob = await as('bob');
    await request(t.kp.url!).post('/api/v1/llm/byok/keys').set('Authorization', `Bearer ${alice}`).send({ provider: 'openai', api_key: 'sk-alice-own-key-9999' }).expect(201);
    const a = await request(t.kp.url!).get('/api/v1/llm/byok/keys').set('Authorization', `Bearer ${alice}`).expect(200);
    expect(a.body.items).toEqual([expect.objectContaining({ provider: 'openai', masked_key: '****9999' })]);
    const b = await request(t.kp.url!).get('/api/v1/llm/byok/keys').set('Authorization', `Bearer ${bob}`).expect(200);
    expect(b.body.items).toEqual([]);
    await request(t.kp.url!).delete('/api/v1/llm/byok/keys/openai').set('Authorization', `Bearer ${bob}`).expect(404);
    await request(t.kp.url!).delete('/api/v1/llm/byok/keys/openai').set('Authorization', `Bearer ${alice}`).expect(204);
    const row = await t.db.pool.query('SELECT count(*)::int AS n FROM byok_keys');
    expect(row.rows[0].n).toBe(0);
  });

  it('BYOK keys of two API tokens with the same name stay apart, and apart from a JWT user of that name', async () => {
    const one = (await t.api().post('/api/v1/admin/tokens').send({ name: 'alice', role: 'viewer' }).expect(201)).body.token;
    const two = (await t.api().post('/api/v1/admin/tokens').send({ name: 'alice', role: 'viewer' }).expect(201)).body.token;
    const jwt = await new SignJWT({ role: 'viewer' }).setProtectedHeader({ alg: 'HS256' }).setSubject('alice').setExpirationTime('5m').sign(new TextEncoder().encode(JWT_SECRET));
    await request(t.kp.url!).post('/api/v1/llm/byok/keys').set('Authorization', `Bearer ${one}`).send({ provider: 'groq', api_key: 'gsk_token-one-1111' }).expect(201);
    for (const other of [two, jwt]) {
      const list = await request(t.kp.url!).get('/api/v1/llm/byok/keys').set('Authorization', `Bearer ${other}`).expect(200);
      expect(list.body.items).toEqual([]);
      await request(t.kp.url!).delete('/api/v1/llm/byok/keys/groq').set('Authorization', `Bearer ${other}`).expect(404);
    }
    const mine = await request(t.kp.url!).get('/api/v1/llm/byok/keys').set('Authorization', `Bearer ${one}`).expect(200);
    expect(mine.body.items).toEqual([expect.objectContaining({ provider: 'groq', masked_key: '****1111' })]);
  });
});

describe('auth with a JWKS URL', () => {
  let t: TestApp;
  let jwks: Server;
  let privateKey: KeyLike;
  beforeAll(async () => {
    const pair = await generateKeyPair('RS256');
    privateKey = pair.privateKey;
    const jwk = { ...(await exportJWK(pair.publicKey)), kid: 'test-1', alg: 'RS256', use: 'sig' };
    jwks = createServer((_req, res) => {
      res.setHeader('Content-Type', 'application/json');
      res.end(JSON.stringify({ keys: [jwk] }));
    });
    await new Promise<void>((r) => jwks.listen(0, '127.0.0.1', r));
    const url = `http://127.0.0.1:${(jwks.address() as AddressInfo).port}/jwks.json`;
    t = await startTestApp({ env: { KEYPLANE_JWKS_URL: url, KEYPLANE_JWT_ISSUER: 'https://idp.test', KEYPLANE_JWT_AUDIENCE: 'keyplane' } });
  });
  afterAll(async () => {
    await t.close();
    await new Promise((r) => jwks.close(r));
  });

  it('accepts an RS256 token signed by a key of the set, refuses others', async () => {
    const good = await new SignJWT({ role: 'admin' }).setProtectedHeader({ alg: 'RS256', kid: 'test-1' }).setIssuer('https://idp.test').setAudience('keyplane').setSubject('oidc-user').setExpirationTime('5m').sign(privateKey);
    await request(t.kp.url!).get('/api/v1/admin/audit').set('Authorization', `Bearer ${good}`).expect(200);
    const other = await generateKeyPair('RS256');
    const bad = await new SignJWT({ role: 'admin' }).setProtectedHeader({ alg: 'RS256', kid: 'test-1' }).setIssuer('https://idp.test').setAudience('keyplane').setSubject('x').setExpirationTime('5m').sign(other.privateKey);
    await request(t.kp.url!).get('/api/v1/admin/audit').set('Authorization', `Bearer ${bad}`).expect(401);
  });
});

describe('repeated failures are slowed down', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp({ env: { KEYPLANE_AUTH_MAX_FAILURES: '5' } });
  });
  afterAll(async () => {
    await t.close();
  });

  it('answers 429 with Retry-After to failures after the limit, and still 200 to a valid token from that address', async () => {
    for (let i = 0; i < 5; i++) await request(t.kp.url!).get('/api/v1/admin/platform-keys').set('Authorization', 'Bearer wrong-guess').expect(401);
    const limited = await request(t.kp.url!).get('/api/v1/admin/platform-keys').set('Authorization', 'Bearer wrong-guess').expect(429);
    expect(Number(limited.headers['retry-after'])).toBeGreaterThan(0);
    expect(limited.headers['content-type']).toMatch(/problem\+json/);
    await t.api().get('/api/v1/admin/platform-keys').expect(200);
    await request(t.kp.url!).get('/healthz').expect(200);
  });
});
