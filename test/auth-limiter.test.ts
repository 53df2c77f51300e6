import http from 'node:http';
import request from 'supertest';
import { loadSettings } from '../src/config';
import { FailureLimiter } from '../src/http/auth';
import { startTestApp, type TestApp } from './helpers/app';

interface Answer {
  status: number;
  retryAfter?: string;
  type?: string;
}

/** GET through a chosen local address (127.0.0.1 and 127.0.0.2 are both loopback on Linux) with chosen headers. */
function get(url: string, path: string, headers: Record<string, string>, localAddress = '127.0.0.1'): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = http.request(`${url}${path}`, { headers, localAddress, agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode!, retryAfter: res.headers['retry-after'], type: res.headers['content-type'] }));
    });
    req.on('error', reject);
    req.end();
  });
}

const KEYS = '/api/v1/admin/platform-keys';
const bearer = (t: string) => ({ Authorization: `Bearer ${t}` });

describe('failed logins slow the guesser down, never a valid credential', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp();
  });
  afterAll(async () => {
    await t.close();
  });

  it('after 10+ failures from an address, the admin token and an API token from it still get 200; invalid ones get 429 with Retry-After', async () => {
    const made = await t.api().post('/api/v1/admin/tokens').send({ name: 'ops', role: 'viewer' }).expect(201);
    for (let i = 0; i < 10; i++) expect((await get(t.kp.url!, KEYS, bearer(`kp_wrong-guess-${i}`))).status).toBe(401);
    const limited = await get(t.kp.url!, KEYS, bearer('kp_wrong-guess-x'));
    expect(limited.status).toBe(429);
    expect(Number(limited.retryAfter)).toBeGreaterThan(0);
    expect(Number(limited.retryAfter)).toBeLessThanOrEqual(60);
    expect(limited.type).toMatch(/problem\+json/);
    // No credential at all counts as a failure too, and is slowed the same way.
    expect((await get(t.kp.url!, KEYS, {})).status).toBe(429);
    expect((await get(t.kp.url!, KEYS, bearer(t.adminToken))).status).toBe(200);
    expect((await get(t.kp.url!, KEYS, bearer(made.body.token))).status).toBe(200);
    // A success does not reset the count: the next guess is still limited.
    expect((await get(t.kp.url!, KEYS, bearer('kp_wrong-guess-y'))).status).toBe(429);
    await request(t.kp.url!).get('/healthz').expect(200);
  });
});

describe('KEYPLANE_TRUSTED_PROXIES', () => {
  let t: TestApp;
  beforeAll(async () => {
    // 127.0.0.1 is the proxy; 127.0.0.2 is any other peer.
    t = await startTestApp({ env: { KEYPLANE_TRUSTED_PROXIES: '127.0.0.1', KEYPLANE_AUTH_MAX_FAILURES: '3' } });
  });
  afterAll(async () => {
    await t.close();
  });

  it('counts two clients behind the proxy apart, and ignores X-Forwarded-For from a peer that is not a trusted proxy', async () => {
    const viaProxy = (client: string, token: string) => get(t.kp.url!, KEYS, { ...bearer(token), 'X-Forwarded-For': client }, '127.0.0.1');
    const direct = (spoofed: string, token: string) => get(t.kp.url!, KEYS, { ...bearer(token), 'X-Forwarded-For': spoofed }, '127.0.0.2');

    for (let i = 0; i < 3; i++) expect((await viaProxy('203.0.113.1', 'kp_guess')).status).toBe(401);
    expect((await viaProxy('203.0.113.1', 'kp_guess')).status).toBe(429);
    // Another client behind the same proxy has its own count.
    expect((await viaProxy('203.0.113.2', 'kp_guess')).status).toBe(401);
    // And the valid token through the proxy, from the limited client, still works.
    expect((await viaProxy('203.0.113.1', t.adminToken)).status).toBe(200);

    // A peer that is not the proxy claims to be 203.0.113.2 (and then others): all counted as 127.0.0.2.
    for (let i = 0; i < 3; i++) expect((await direct(`203.0.113.${2 + i}`, 'kp_guess')).status).toBe(401);
    expect((await direct('203.0.113.99', 'kp_guess')).status).toBe(429);
    // 203.0.113.2 itself was not charged for the spoofed attempts (it has 2 failures of 3 now).
    expect((await viaProxy('203.0.113.2', 'kp_guess')).status).toBe(401);
    expect((await viaProxy('203.0.113.2', 'kp_guess')).status).toBe(401);
    expect((await viaProxy('203.0.113.2', 'kp_guess')).status).toBe(429);
  });

  it('without the setting, X-Forwarded-For is ignored: every client behind a proxy is the proxy', async () => {
    const plain = await startTestApp({ env: { KEYPLANE_AUTH_MAX_FAILURES: '2' } });
    try {
      const from = (client: string, token: string) => get(plain.kp.url!, KEYS, { ...bearer(token), 'X-Forwarded-For': client });
      expect((await from('198.51.100.1', 'kp_guess')).status).toBe(401);
      expect((await from('198.51.100.2', 'kp_guess')).status).toBe(401);
      expect((await from('198.51.100.3', 'kp_guess')).status).toBe(429);
      expect((await from('198.51.100.3', plain.adminToken)).status).toBe(200);
    } finally {
      await plain.close();
    }
  });
});

describe('KEYPLANE_TRUSTED_PROXIES at start-up', () => {
  it.each([
    ['loopback, 10.0.0.0/8, fd00::/8, 192.168.1.7, linklocal, uniquelocal', ['loopback', '10.0.0.0/8', 'fd00::/8', '192.168.1.7', 'linklocal', 'uniquelocal']],
    ['::1', ['::1']],
  ])('takes %s', (raw, want) => {
    expect(loadSettings({ KEYPLANE_TRUSTED_PROXIES: raw }).trustedProxies).toEqual(want);
  });

  it.each(['proxy.internal', '10.0.0.0/33', '10.0.0', 'loopback 10.0.0.1', '*'])('refuses %s with one line naming the setting', (raw) => {
    let err: unknown;
    try {
      loadSettings({ KEYPLANE_TRUSTED_PROXIES: `loopback,${raw}` });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(Error);
    expect((err as Error).name).toBe('ConfigError');
    expect((err as Error).message).toMatch(/^KEYPLANE_TRUSTED_PROXIES: "/);
    expect((err as Error).message).toContain(raw);
    expect((err as Error).message).not.toContain('\n');
  });
});

describe('FailureLimiter', () => {
  /** A delay the test releases by hand, to see what is held. */
  function manualDelay() {
    const pending: Array<() => void> = [];
    return {
      delay: (_ms: number) => new Promise<void>((resolve) => pending.push(resolve)),
      held: () => pending.length,
      releaseAll: () => pending.splice(0).forEach((f) => f()),
    };
  }
  const settle = () => new Promise((r) => setImmediate(r));

  it('holds at most maxHeldPerAddr failures of one address, answers the rest at once, and gives Retry-After until the window ends', async () => {
    let now = 1_000_000;
    const d = manualDelay();
    const lim = new FailureLimiter({ max: 2, windowMs: 60_000, tarpitMs: 1000, now: () => now, delay: d.delay, maxHeldPerAddr: 3 });
    expect(await lim.fail('a')).toBeUndefined();
    expect(await lim.fail('a')).toBeUndefined();
    const results: Array<number | undefined> = [];
    const all = Array.from({ length: 10 }, () => lim.fail('a').then((r) => results.push(r)));
    await settle();
    // Seven were answered at once, three wait in the tarpit.
    expect(d.held()).toBe(3);
    expect(results).toHaveLength(7);
    now += 20_000;
    d.releaseAll();
    await Promise.all(all);
    expect(results).toHaveLength(10);
    expect(new Set(results.slice(0, 7))).toEqual(new Set([60]));
    expect(new Set(results.slice(7))).toEqual(new Set([40]));
    // Another address is not affected; after the window, a fresh count.
    expect(await lim.fail('b')).toBeUndefined();
    now += 40_000;
    expect(await lim.fail('a')).toBeUndefined();
  });

  it('holds at most maxHeld failures across all addresses', async () => {
    const d = manualDelay();
    const lim = new FailureLimiter({ max: 0, windowMs: 60_000, tarpitMs: 1000, now: () => 0, delay: d.delay, maxHeldPerAddr: 2, maxHeld: 5 });
    const all = Array.from({ length: 20 }, (_, i) => lim.fail(`10.0.0.${i}`));
    await settle();
    expect(d.held()).toBe(5);
    d.releaseAll();
    expect(new Set(await Promise.all(all))).toEqual(new Set([60]));
  });

  it('remembers at most maxAddrs addresses', async () => {
    const lim = new FailureLimiter({ max: 5, windowMs: 60_000, tarpitMs: 0, now: () => 0, delay: async () => undefined, maxAddrs: 100 });
    for (let i = 0; i < 1000; i++) await lim.fail(`2001:db8::${i.toString(16)}`);
    expect(lim.size).toBeLessThanOrEqual(100);
  });
});
