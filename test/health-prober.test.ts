import client from 'prom-client';
import { WebhookAlerter } from '../src/alerts/webhook';
import type { Prober } from '../src/health/prober';
import { createTestDatabase, type TestDatabase } from './helpers/db';
import { closedPort, startFakeProvider, type FakeProvider } from './helpers/fake-provider';
import { HealthEnv, startReceiver } from './helpers/health-env';
import { until } from './helpers/wait';

const K = {
  ok: 'sk-ok-1111111111111111aaaa',
  err: 'sk-err-222222222222222bbbb',
  unauth: 'sk-unauth-33333333333cccc',
  limited: 'sk-limited-4444444444dddd',
  slow: 'sk-slow-55555555555555eeee',
  hang: 'sk-hang-66666666666666ffff',
  closed: 'sk-closed-777777777777gggg',
  flaky: 'sk-flaky-88888888888888hhh',
  old: 'sk-old-9999999999999999iiii',
  rotated: 'sk-rotated-000000000000jjjj',
  soon: 'sk-soon-aaaaaaaaaaaaaaaakkk',
  later: 'sk-later-bbbbbbbbbbbbbbblll',
};
const ALL_KEYS = Object.values(K);

describe('prober', () => {
  let db: TestDatabase;
  let fake: FakeProvider;
  let env: HealthEnv;
  let prober: Prober | undefined;

  beforeAll(async () => {
    db = await createTestDatabase();
    fake = await startFakeProvider();
  });
  beforeEach(async () => {
    env = new HealthEnv(db.pool);
    await env.reset();
  });
  afterEach(async () => {
    await prober?.stop();
    prober = undefined;
  });
  afterAll(async () => {
    await fake.close();
    await db.drop();
  });

  it('records status, reason, latency, HTTP status, the probed key and history for each kind of answer', async () => {
    const port = await closedPort();
    const setups: Array<[string, Parameters<FakeProvider['setMode']>[1] | null, string]> = [
      ['p-ok', 'ok', K.ok],
      ['p-err', 'error', K.err],
      ['p-unauth', 'unauthorized', K.unauth],
      ['p-limited', 'rate_limited', K.limited],
      ['p-slow', 'slow', K.slow],
      ['p-hang', 'hang', K.hang],
      ['p-closed', null, K.closed],
    ];
    for (const [slug, mode, key] of setups) {
      if (mode) fake.setMode(slug, mode, 400);
      await env.addProvider(slug, { apiBase: mode ? fake.base(slug) : `http://127.0.0.1:${port}/v1`, degradedMs: slug === 'p-slow' ? 200 : 2000 });
      await env.putKey(slug, key);
    }
    await env.addProvider('p-nokey', { apiBase: fake.base('p-nokey') });
    await env.addProvider('p-off', { apiBase: fake.base('p-off'), keyName: 'p-ok', enabled: false });
    const registry = new client.Registry();
    // The slow one answers after 400 ms (degraded past 200 ms); the timeout leaves it room on a loaded
    // machine (at a load of 20, 800 ms was once not enough).
    prober = env.prober({ registry, settings: { healthTimeoutMs: 3_000, litellmUrl: fake.base('litellm') } });

    const result = await prober.runNow();

    const by = Object.fromEntries(result.providers.map((p) => [p.slug, p]));
    expect(by['p-ok']).toMatchObject({ status: 'healthy', reason: 'ok', http_status: 200 });
    expect(by['p-err']).toMatchObject({ status: 'down', reason: 'server_error', http_status: 500 });
    expect(by['p-unauth']).toMatchObject({ status: 'down', reason: 'auth_failed', http_status: 401 });
    expect(by['p-limited']).toMatchObject({ status: 'degraded', reason: 'rate_limited', http_status: 429 });
    expect(by['p-slow']).toMatchObject({ status: 'degraded', reason: 'slow', http_status: 200 });
    expect(by['p-hang']).toMatchObject({ status: 'down', reason: 'timeout', http_status: null });
    expect(by['p-closed']).toMatchObject({ status: 'down', reason: 'unreachable', http_status: null });
    expect(by['p-nokey']).toMatchObject({ status: 'unknown', reason: 'no_key' });
    expect(by['p-off']).toMatchObject({ status: 'unknown', reason: 'disabled' });
    expect(result.litellm).toMatchObject({ status: 'healthy', reason: 'ok', version: '1.81.15' });
    expect(fake.requestsFor('p-nokey')).toHaveLength(0);
    expect(fake.requestsFor('p-off')).toHaveLength(0);

    const stored = await env.provider('p-unauth');
    const view = await env.keys.get('p-unauth');
    expect(stored).toMatchObject({
      health_status: 'down',
      health_reason: 'auth_failed',
      health_http_status: 401,
      health_key_version: 1,
      health_key_fingerprint: view.fingerprint,
      health_fail_streak: 1,
    });
    expect(stored.health_checked_at).toBeInstanceOf(Date);
    expect(Number(stored.health_latency_ms)).toBeGreaterThanOrEqual(0);
    expect((await env.provider('p-slow')).health_latency_ms).toBeGreaterThanOrEqual(400);

    const hist = await db.pool.query("SELECT subject, name, reason FROM health_history ORDER BY subject, name");
    expect(hist.rows.map((r) => `${r.subject}/${r.name}/${r.reason}`)).toEqual([
      `litellm/${fake.base('litellm')}/ok`,
      'provider/p-closed/unreachable',
      'provider/p-err/server_error',
      'provider/p-hang/timeout',
      'provider/p-limited/rate_limited',
      'provider/p-ok/ok',
      'provider/p-slow/slow',
      'provider/p-unauth/auth_failed',
    ]);

    const metrics = await registry.metrics();
    expect(metrics).toContain('keyplane_provider_health_status{provider="p-ok",status="healthy"} 1');
    expect(metrics).toContain('keyplane_provider_health_status{provider="p-ok",status="down"} 0');
    expect(metrics).toContain('keyplane_provider_health_status{provider="p-unauth",status="down"} 1');
    expect(metrics).toContain('keyplane_provider_health_status{provider="p-nokey",status="unknown"} 1');
    expect(metrics).toContain('keyplane_litellm_health_status{status="healthy"} 1');
    expect(metrics).toMatch(/keyplane_provider_probe_latency_seconds_count\{provider="p-slow"\} 1/);
    expect(metrics).toContain('keyplane_health_rounds_total{outcome="done"} 1');

    expect(env.events.filter((e) => e.name === 'probe:result')).toHaveLength(9);
    expect(env.logs()).toContain('provider p-unauth is down (auth_failed)');
    env.expectNoSecrets(ALL_KEYS, [JSON.stringify(result), metrics]);
  });

  it('hysteresis both ways, and every transition reaches the webhook without a secret', async () => {
    const receiver = await startReceiver();
    try {
      const alerter = new WebhookAlerter({ url: receiver.url, instance: 'test-1', log: env.log, secrets: env.logSecrets, backoffMs: 10 });
      await env.addProvider('flaky', { apiBase: fake.base('flaky') });
      await env.putKey('flaky', K.flaky);
      prober = env.prober({ alerter, probeLitellm: false });
      const statusAfterRound = async (): Promise<string> => (await prober!.runNow()).providers[0]!.status;

      fake.setMode('flaky', 'ok');
      expect(await statusAfterRound()).toBe('healthy');
      fake.setMode('flaky', 'error');
      expect(await statusAfterRound()).toBe('healthy');
      expect(await env.provider('flaky')).toMatchObject({ health_status: 'healthy', health_observed_status: 'down', health_observed_reason: 'server_error' });
      expect(await statusAfterRound()).toBe('down');
      fake.setMode('flaky', 'ok');
      expect(await statusAfterRound()).toBe('down');
      expect(await statusAfterRound()).toBe('healthy');

      const transitions = env.events.filter((e) => e.name === 'health:transition').map((e) => e.payload);
      expect(transitions).toEqual([
        { subject: 'provider', name: 'flaky', from: 'unknown', to: 'healthy', reason: 'ok' },
        { subject: 'provider', name: 'flaky', from: 'healthy', to: 'down', reason: 'server_error' },
        { subject: 'provider', name: 'flaky', from: 'down', to: 'healthy', reason: 'ok' },
      ]);
      // unknown -> healthy is no news; the other two are posted.
      await receiver.waitFor(2);
      expect(receiver.bodies).toEqual([
        expect.objectContaining({ type: 'provider.status_changed', provider: 'flaky', from: 'healthy', to: 'down', reason: 'server_error', http_status: 500, key_name: 'flaky', key_version: 1, instance: 'test-1' }),
        expect.objectContaining({ type: 'provider.status_changed', provider: 'flaky', from: 'down', to: 'healthy', reason: 'ok' }),
      ]);
      expect(Date.parse(String(receiver.bodies[0]!.at))).not.toBeNaN();
      const changedAt = (await env.provider('flaky')).health_changed_at as Date;
      expect(changedAt.getTime()).toBeGreaterThan(Date.now() - 60_000);
      expect(await db.pool.query("SELECT count(*)::int AS n FROM health_history WHERE name = 'flaky'")).toMatchObject({ rows: [{ n: 5 }] });
      env.expectNoSecrets([K.flaky], receiver.raw);
      expect(env.logs()).not.toContain('T0KEN-in-the-path');
    } finally {
      await receiver.close();
    }
  });

  it('LiteLLM itself has a status with hysteresis, and its transitions are alerted', async () => {
    const receiver = await startReceiver();
    try {
      const alerter = new WebhookAlerter({ url: receiver.url, instance: 'test-1', log: env.log, secrets: env.logSecrets, backoffMs: 10 });
      prober = env.prober({ alerter, settings: { litellmUrl: fake.base('llm2') } });
      expect((await prober.runNow()).litellm).toMatchObject({ status: 'healthy', version: '1.81.15' });
      fake.setMode('llm2', 'not_ready');
      expect((await prober.runNow()).litellm).toMatchObject({ status: 'healthy', observed: { status: 'degraded', reason: 'not_ready' } });
      expect((await prober.runNow()).litellm).toMatchObject({ status: 'degraded', reason: 'not_ready', http_status: 503 });
      await receiver.waitFor(1);
      expect(receiver.bodies[0]).toMatchObject({ type: 'litellm.status_changed', litellm: fake.base('llm2'), from: 'healthy', to: 'degraded', reason: 'not_ready' });
      const row = await env.store.litellm(fake.base('llm2'));
      expect(row).toMatchObject({ status: 'degraded', observed_reason: 'not_ready', litellm_version: '1.81.15', fail_streak: 2 });
    } finally {
      fake.setMode('llm2', 'ok');
      await receiver.close();
    }
  });

  it('a rotated key is judged afresh: a fixed key is healthy on its first good probe', async () => {
    await env.addProvider('rot', { apiBase: fake.base('rot') });
    fake.acceptKeys('rot', [K.rotated]);
    await env.putKey('rot', K.old);
    prober = env.prober({ probeLitellm: false });
    await prober.runNow();
    await prober.runNow();
    expect(await env.provider('rot')).toMatchObject({ health_status: 'down', health_reason: 'auth_failed', health_key_version: 1 });
    await env.putKey('rot', K.rotated);
    const r = await prober.runNow();
    expect(r.providers[0]).toMatchObject({ status: 'healthy', previous_status: 'down', changed: true, key: { name: 'rot', version: 2 } });
    expect(fake.requestsFor('rot').map((q) => q.key)).toEqual([K.old, K.old, K.rotated]);
    fake.acceptKeys('rot', undefined);
  });

  it('flags keys that expire within 14 days in metrics, alerts once per key version', async () => {
    const receiver = await startReceiver();
    try {
      const alerter = new WebhookAlerter({ url: receiver.url, instance: 'test-1', log: env.log, secrets: env.logSecrets, backoffMs: 10 });
      const soonAt = new Date(Date.now() + 3 * 86_400_000 + 60_000);
      await env.putKey('soon', K.soon, soonAt);
      await env.putKey('later', K.later, new Date(Date.now() + 30 * 86_400_000));
      const registry = new client.Registry();
      prober = env.prober({ alerter, registry, probeLitellm: false });
      await prober.runNow();
      await prober.runNow();
      const metrics = await registry.metrics();
      expect(metrics).toContain('keyplane_platform_keys_expiring 1');
      expect(metrics).toContain(`keyplane_platform_key_earliest_expiry_timestamp_seconds ${Math.floor(soonAt.getTime() / 1000)}`);
      expect(metrics).not.toMatch(/"(soon|later)"/);
      await receiver.waitFor(1);
      expect(receiver.bodies).toEqual([expect.objectContaining({ type: 'key.expiring', key_name: 'soon', key_version: 1, days_left: 3 })]);
      expect(env.logs()).toContain('platform key soon expires in 3 days');
      env.expectNoSecrets([K.soon, K.later], receiver.raw);
    } finally {
      await receiver.close();
    }
  });

  it('trims history older than the retention', async () => {
    await env.addProvider('trim', { apiBase: fake.base('trim') });
    await env.putKey('trim', K.ok);
    await db.pool.query(
      `INSERT INTO health_history (subject, name, status, observed_status, reason, checked_at) VALUES
       ('provider', 'trim', 'healthy', 'healthy', 'ok', now() - interval '8 days'),
       ('provider', 'trim', 'healthy', 'healthy', 'ok', now() - interval '6 days')`,
    );
    prober = env.prober({ probeLitellm: false });
    await prober.runNow();
    const { rows } = await db.pool.query("SELECT checked_at FROM health_history WHERE name = 'trim' ORDER BY checked_at");
    expect(rows).toHaveLength(2);
    expect(rows[0].checked_at.getTime()).toBeGreaterThan(Date.now() - 7 * 86_400_000);
  });

  it('probes at most healthConcurrency providers at once', async () => {
    for (let i = 0; i < 6; i++) {
      await env.addProvider(`c${i}`, { apiBase: fake.base(`c${i}`), keyName: 'shared' });
      fake.setMode(`c${i}`, 'hold');
    }
    await env.putKey('shared', K.ok);
    prober = env.prober({ probeLitellm: false, settings: { healthConcurrency: 2 } });
    const round = prober.runNow();
    const held = (): number => fake.requests.filter((r) => /^c\d$/.test(r.name)).length;
    for (let answered = 0; answered < 6; answered += 2) {
      // The two probes of a pair may arrive in either order: wait for both, then none beyond them.
      await until(`${answered + 2} probes held`, () => held() >= answered + 2);
      expect(held()).toBe(answered + 2);
      fake.release();
    }
    expect((await round).providers.every((p) => p.status === 'healthy')).toBe(true);
  });

  it('a manual trigger joins the round already running instead of starting another', async () => {
    fake.setMode('join', 'hold');
    await env.addProvider('join', { apiBase: fake.base('join') });
    await env.putKey('join', K.ok);
    prober = env.prober({ probeLitellm: false });
    const a = prober.runNow();
    await fake.waitForRequests('join', 1);
    const b = prober.runNow();
    fake.release();
    const [ra, rb] = await Promise.all([a, b]);
    expect(ra.round).toBe(rb.round);
    expect(fake.requestsFor('join')).toHaveLength(1);
  });

  it('stop() cancels probes in flight and stores nothing from that round', async () => {
    fake.setMode('stopme', 'hang');
    await env.addProvider('stopme', { apiBase: fake.base('stopme') });
    await env.putKey('stopme', K.ok);
    prober = env.prober({ probeLitellm: false, settings: { healthTimeoutMs: 30_000 } });
    const round = prober.runNow();
    await fake.waitForRequests('stopme', 1);
    const started = Date.now();
    await prober.stop();
    expect(Date.now() - started).toBeLessThan(2000);
    await expect(round).rejects.toThrow(/stopped/);
    expect(await env.provider('stopme')).toMatchObject({ health_status: 'unknown', health_reason: 'never_checked', health_checked_at: null });
    await expect(prober.runNow()).rejects.toThrow(/stopped/);
  });
});
