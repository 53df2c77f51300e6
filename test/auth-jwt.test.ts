import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import request from 'supertest';
import { SignJWT, exportJWK, generateKeyPair, type KeyLike } from 'jose';
import { loadSettings } from '../src/config';
import { startTestApp, type TestApp } from './helpers/app';

const SECRET = 'jwt-claims-secret-for-tests-0123456789';
const HS = new TextEncoder().encode(SECRET);
const KEYS = '/api/v1/admin/platform-keys';
const nowS = () => Math.floor(Date.now() / 1000);

/** A signed HS256 token with exactly the claims given (nothing added). */
function hs256(claims: Record<string, unknown>, key: Uint8Array = HS): Promise<string> {
  return new SignJWT(claims).setProtectedHeader({ alg: 'HS256' }).sign(key);
}

function call(t: TestApp, token: string) {
  return request(t.kp.url!).get(KEYS).set('Authorization', `Bearer ${token}`);
}

describe('JWT claims (HS256, no issuer or audience configured)', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp({ env: { KEYPLANE_JWT_SECRET: SECRET, KEYPLANE_AUTH_MAX_FAILURES: '1000' } });
  });
  afterAll(async () => {
    await t.close();
  });

  it('requires exp: a token without one is refused, with the same claims and an exp it is accepted', async () => {
    const noExp = await call(t, await hs256({ sub: 'carol', role: 'viewer', iat: nowS() })).expect(401);
    expect(noExp.body.detail).toMatch(/no exp claim/);
    await call(t, await hs256({ sub: 'carol', role: 'viewer', iat: nowS(), exp: nowS() + 300 })).expect(200);
    const expired = await call(t, await hs256({ sub: 'carol', role: 'viewer', exp: nowS() - 5 })).expect(401);
    expect(expired.body.detail).toMatch(/expired/);
  });

  it('refuses iat more than 60 s in the future, accepts a small skew', async () => {
    const future = await call(t, await hs256({ sub: 'carol', role: 'viewer', iat: nowS() + 600, exp: nowS() + 900 })).expect(401);
    expect(future.body.detail).toMatch(/iat claim .*future/);
    await call(t, await hs256({ sub: 'carol', role: 'viewer', iat: nowS() + 30, exp: nowS() + 900 })).expect(200);
  });

  it('checks iss and aud only when configured: here any are accepted', async () => {
    await call(t, await hs256({ sub: 'carol', role: 'viewer', iss: 'anyone', aud: 'anything', exp: nowS() + 60 })).expect(200);
  });

  it.each([
    ['sub', 'NUL', { sub: 'eve\u0000admin', role: 'operator' }],
    ['sub', 'a lone high surrogate', { sub: 'eve\ud800', role: 'operator' }],
    ['sub', 'a lone low surrogate', { sub: '\udc00eve', role: 'operator' }],
    ['role', 'NUL', { sub: 'eve', role: 'operator\u0000' }],
    ['role', 'a lone surrogate', { sub: 'eve', role: '\ud83doperator' }],
  ])('a signed %s claim with %s is a 400 naming Authorization, and reaches no audit row', async (claim, _what, claims) => {
    const before = (await t.db.pool.query('SELECT count(*)::int AS n FROM audit_log')).rows[0].n;
    const token = await hs256({ ...claims, exp: nowS() + 60 });
    const res = await request(t.kp.url!).put(`${KEYS}/claims-check`).set('Authorization', `Bearer ${token}`).send({ api_key: 'sk-claims-check-0000' }).expect(400);
    expect(res.headers['content-type']).toMatch(/problem\+json/);
    expect(res.body.errors).toEqual([{ field: 'Authorization', rule: expect.stringMatching(new RegExp(`^the JWT's ${claim} claim must not contain NUL or unpaired surrogate`)) }]);
    expect((await t.db.pool.query('SELECT count(*)::int AS n FROM audit_log')).rows[0].n).toBe(before);
    await t.api().get('/api/v1/admin/platform-keys/claims-check').expect(404);
    const verify = await t.api().get('/api/v1/admin/audit/verify').expect(200);
    expect(verify.body).toMatchObject({ ok: true });
  });

  it('a well-formed surrogate pair in sub is fine and is what the audit row stores', async () => {
    const token = await hs256({ sub: 'dave\ud83d\ude00', role: 'operator', exp: nowS() + 60 });
    await request(t.kp.url!).put(`${KEYS}/emoji-actor`).set('Authorization', `Bearer ${token}`).send({ api_key: 'sk-emoji-actor-0000' }).expect(200);
    const audit = await t.api().get('/api/v1/admin/audit?target=platform_key/emoji-actor').expect(200);
    expect(audit.body.items[0].actor).toBe('jwt:dave\u{1F600}');
    await t.api().get('/api/v1/admin/audit/verify').expect(200);
  });

  it('a sub longer than 255 characters is a 400; unsigned claims are never looked at (401)', async () => {
    const long = await call(t, await hs256({ sub: 'x'.repeat(256), role: 'viewer', exp: nowS() + 60 })).expect(400);
    expect(long.body.errors).toEqual([{ field: 'Authorization', rule: "the JWT's sub claim must be at most 255 characters" }]);
    const forged = await hs256({ sub: 'eve\u0000', role: 'admin', exp: nowS() + 60 }, new TextEncoder().encode('not-the-secret-not-the-secret-0000'));
    await call(t, forged).expect(401);
  });
});

describe('JWT issuer and audience with the HS256 secret, when set', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp({ env: { KEYPLANE_JWT_SECRET: SECRET, KEYPLANE_JWT_ISSUER: 'https://sso.example', KEYPLANE_JWT_AUDIENCE: 'keyplane-admin', KEYPLANE_AUTH_MAX_FAILURES: '1000' } });
  });
  afterAll(async () => {
    await t.close();
  });

  it('accepts the configured iss and aud, refuses others or none', async () => {
    const base = { sub: 'carol', role: 'viewer', exp: nowS() + 60 };
    await call(t, await hs256({ ...base, iss: 'https://sso.example', aud: 'keyplane-admin' })).expect(200);
    await call(t, await hs256({ ...base, iss: 'https://sso.example', aud: ['other-app', 'keyplane-admin'] })).expect(200);
    const wrongIss = await call(t, await hs256({ ...base, iss: 'https://evil.example', aud: 'keyplane-admin' })).expect(401);
    expect(wrongIss.body.detail).toMatch(/iss claim/);
    expect(wrongIss.body.detail).not.toContain('evil');
    const wrongAud = await call(t, await hs256({ ...base, iss: 'https://sso.example', aud: 'other-app' })).expect(401);
    expect(wrongAud.body.detail).toMatch(/aud claim/);
    await call(t, await hs256({ ...base, aud: 'keyplane-admin' })).expect(401);
    await call(t, await hs256({ ...base, iss: 'https://sso.example' })).expect(401);
  });
});

describe('JWT with a JWKS URL', () => {
  const ISS = 'https://idp.example/realms/ops';
  const AUD = 'keyplane';
  let jwks: Server;
  let url: string;
  let privateKey: KeyLike;
  let t: TestApp;
  beforeAll(async () => {
    const pair = await generateKeyPair('ES256');
    privateKey = pair.privateKey;
    const jwk = { ...(await exportJWK(pair.publicKey)), kid: 'k1', alg: 'ES256', use: 'sig' };
    jwks = createServer((_req, res) => {
      res.setHeader('Content-Type', 'application/json');
      res.end(JSON.stringify({ keys: [jwk] }));
    });
    await new Promise<void>((r) => jwks.listen(0, '127.0.0.1', r));
    url = `http://127.0.0.1:${(jwks.address() as AddressInfo).port}/certs`;
    t = await startTestApp({ env: { KEYPLANE_JWKS_URL: url, KEYPLANE_JWT_ISSUER: ISS, KEYPLANE_JWT_AUDIENCE: AUD, KEYPLANE_AUTH_MAX_FAILURES: '1000' } });
  });
  afterAll(async () => {
    await t.close();
    await new Promise((r) => jwks.close(r));
  });

  const es256 = (claims: Record<string, unknown>) => new SignJWT(claims).setProtectedHeader({ alg: 'ES256', kid: 'k1' }).sign(privateKey);

  it('needs KEYPLANE_JWT_ISSUER and KEYPLANE_JWT_AUDIENCE: a one-line ConfigError naming the missing one', () => {
    expect(() => loadSettings({ KEYPLANE_JWKS_URL: url })).toThrow(/^KEYPLANE_JWT_ISSUER: is required with KEYPLANE_JWKS_URL$/);
    expect(() => loadSettings({ KEYPLANE_JWKS_URL: url, KEYPLANE_JWT_ISSUER: ISS })).toThrow(/^KEYPLANE_JWT_AUDIENCE: is required with KEYPLANE_JWKS_URL$/);
    expect(() => loadSettings({ KEYPLANE_JWKS_URL: url, KEYPLANE_JWT_AUDIENCE: AUD })).toThrow(/^KEYPLANE_JWT_ISSUER: /);
    expect(loadSettings({ KEYPLANE_JWKS_URL: url, KEYPLANE_JWT_ISSUER: ISS, KEYPLANE_JWT_AUDIENCE: AUD })).toMatchObject({ jwtIssuer: ISS, jwtAudience: AUD });
  });

  it('accepts a token of the issuer for this audience; refuses another audience, another issuer, no exp, a future iat', async () => {
    const base = { sub: 'oidc-user', role: 'admin', iss: ISS, aud: AUD, iat: nowS(), exp: nowS() + 300 };
    await call(t, await es256(base)).expect(200);
    await call(t, await es256({ ...base, aud: 'grafana' })).expect(401);
    await call(t, await es256({ ...base, iss: 'https://idp.example/realms/other' })).expect(401);
    const { exp: _exp, ...noExp } = base;
    await call(t, await es256(noExp)).expect(401);
    await call(t, await es256({ ...base, iat: nowS() + 3600 })).expect(401);
    await call(t, await es256({ ...base, sub: 'x\u0000' })).expect(400);
  });

  it('a JWKS that cannot be reached is a 503, not a 401 charged to the caller', async () => {
    const dead = createServer();
    await new Promise<void>((r) => dead.listen(0, '127.0.0.1', r));
    const deadUrl = `http://127.0.0.1:${(dead.address() as AddressInfo).port}/certs`;
    await new Promise((r) => dead.close(r));
    const t2 = await startTestApp({ env: { KEYPLANE_JWKS_URL: deadUrl, KEYPLANE_JWT_ISSUER: ISS, KEYPLANE_JWT_AUDIENCE: AUD, KEYPLANE_AUTH_MAX_FAILURES: '1' } });
    try {
      const token = await es256({ sub: 'oidc-user', role: 'admin', iss: ISS, aud: AUD, exp: nowS() + 300 });
      for (let i = 0; i < 3; i++) {
        const res = await call(t2, token).expect(503);
        expect(res.body.type).toMatch(/unavailable$/);
      }
      // Not counted as failures: the one allowed failure is still there.
      await call(t2, 'kp_wrong').expect(401);
      await call(t2, 'kp_wrong').expect(429);
    } finally {
      await t2.close();
    }
  });
});
