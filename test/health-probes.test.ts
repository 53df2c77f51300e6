import { buildProbeRequest, probeLitellm, probeProvider, type HealthReason, type HealthStatus } from '../src/health/probes';
import { mapLimit, nextState } from '../src/health/prober';
import { closedPort, startFakeProvider, type FakeMode, type FakeProvider } from './helpers/fake-provider';

const KEY = 'sk-test-probe-0123456789abcdef';

describe('probes against fake providers', () => {
  let fake: FakeProvider;
  beforeAll(async () => {
    fake = await startFakeProvider();
  });
  afterAll(async () => {
    await fake.close();
  });

  const cases: Array<[string, FakeMode, HealthStatus, HealthReason, number | null]> = [
    ['answers 200', 'ok', 'healthy', 'ok', 200],
    ['answers 500', 'error', 'down', 'server_error', 500],
    ['answers 401', 'unauthorized', 'down', 'auth_failed', 401],
    ['answers 403', 'forbidden', 'down', 'auth_failed', 403],
    ['answers 429', 'rate_limited', 'degraded', 'rate_limited', 429],
    ['answers slowly', 'slow', 'degraded', 'slow', 200],
    ['hangs', 'hang', 'down', 'timeout', null],
    ['answers 200 with HTML', 'not_json', 'down', 'bad_response', 200],
  ];

  it.each(cases)('a provider that %s is %s (%s)', async (_what, mode, status, reason, httpStatus) => {
    const name = `p-${mode}`;
    fake.setMode(name, mode, 300);
    // Only the slow case gets a tight limit, so a busy test machine cannot make the others slow.
    const degradedMs = mode === 'slow' ? 150 : 2000;
    const obs = await probeProvider({ kind: 'openai', apiBase: fake.base(name), apiKey: KEY, degradedMs }, { timeoutMs: 600 });
    expect(obs).toMatchObject({ status, reason, httpStatus });
    expect(obs.detail).not.toContain(KEY);
    expect(obs.detail).not.toContain(fake.url);
    if (mode === 'hang') expect(obs.latencyMs).toBeGreaterThanOrEqual(550);
  });

  it('a closed port is down (unreachable)', async () => {
    const port = await closedPort();
    const obs = await probeProvider({ kind: 'openai', apiBase: `http://127.0.0.1:${port}/v1`, apiKey: KEY, degradedMs: 2000 }, { timeoutMs: 2000 });
    expect(obs).toMatchObject({ status: 'down', reason: 'unreachable', httpStatus: null, detail: 'connection refused' });
  });

  it('never copies a provider message that echoes the key', async () => {
    fake.setMode('echo', 'unauthorized');
    const obs = await probeProvider({ kind: 'openai', apiBase: fake.base('echo'), apiKey: KEY, degradedMs: 2000 }, { timeoutMs: 2000 });
    const sent = fake.requestsFor('echo').at(-1)!;
    expect(sent.key).toBe(KEY);
    expect(obs.detail).toBe('the provider refused the key: HTTP 401 (invalid_api_key, invalid_request_error)');
  });

  it('OpenAI-compatible kinds list models with a Bearer key', async () => {
    for (const kind of ['openai', 'groq', 'together_ai', 'fireworks_ai', 'some_openai_compatible']) {
      const name = `kind-${kind}`;
      const obs = await probeProvider({ kind, apiBase: fake.base(name), apiKey: KEY, degradedMs: 2000 }, { timeoutMs: 2000 });
      expect(obs.status).toBe('healthy');
      const r = fake.requestsFor(name)[0]!;
      expect(r.path).toBe(`/${name}/models`);
      expect(r.headers.authorization).toBe(`Bearer ${KEY}`);
    }
  });

  it('OpenRouter reads the key record (its model list is public and would accept any key)', async () => {
    await probeProvider({ kind: 'openrouter', apiBase: fake.base('or'), apiKey: KEY, degradedMs: 2000 }, { timeoutMs: 2000 });
    expect(fake.requestsFor('or')[0]).toMatchObject({ path: '/or/key', key: KEY });
  });

  it('Anthropic lists models with x-api-key and anthropic-version, with or without /v1 in the base', async () => {
    for (const base of [fake.base('anth'), `${fake.base('anth')}/v1`]) {
      const obs = await probeProvider({ kind: 'anthropic', apiBase: base, apiKey: KEY, degradedMs: 2000 }, { timeoutMs: 2000 });
      expect(obs.status).toBe('healthy');
    }
    expect(fake.requestsFor('anth')).toHaveLength(2);
    for (const r of fake.requestsFor('anth')) {
      expect(r.url).toBe('/anth/v1/models?limit=1');
      expect(r.headers['x-api-key']).toBe(KEY);
      expect(r.headers['anthropic-version']).toBe('2023-06-01');
      expect(r.headers.authorization).toBeUndefined();
    }
    fake.setMode('anth-bad', 'unauthorized');
    const bad = await probeProvider({ kind: 'anthropic', apiBase: fake.base('anth-bad'), apiKey: KEY, degradedMs: 2000 }, { timeoutMs: 2000 });
    expect(bad).toMatchObject({ status: 'down', reason: 'auth_failed', detail: 'the provider refused the key: HTTP 401 (authentication_error)' });
  });

  it('Gemini sends the key in x-goog-api-key, never in the URL, and reads its 400 API_KEY_INVALID as a refused key', async () => {
    const ok = await probeProvider({ kind: 'gemini', apiBase: fake.base('gem'), apiKey: KEY, degradedMs: 2000 }, { timeoutMs: 2000 });
    expect(ok.status).toBe('healthy');
    fake.acceptKeys('gem', ['another-valid-key']);
    const bad = await probeProvider({ kind: 'gemini', apiBase: fake.base('gem'), apiKey: KEY, degradedMs: 2000 }, { timeoutMs: 2000 });
    expect(bad).toMatchObject({ status: 'down', reason: 'auth_failed', httpStatus: 400, detail: 'the provider refused the key: HTTP 400 (INVALID_ARGUMENT, API_KEY_INVALID)' });
    expect(fake.requestsFor('gem')).toHaveLength(2);
    for (const r of fake.requestsFor('gem')) {
      expect(r.url).toBe('/gem/models?pageSize=1');
      expect(r.url).not.toContain(KEY);
      expect(r.headers['x-goog-api-key']).toBe(KEY);
    }
  });

  it('uses the public API base of a kind when the provider has none', () => {
    expect(buildProbeRequest('openai', null, KEY)?.url).toBe('https://api.openai.com/v1/models');
    expect(buildProbeRequest('gemini', null, KEY)?.url).toBe('https://generativelanguage.googleapis.com/v1beta/models?pageSize=1');
    expect(buildProbeRequest('anthropic', null, KEY)?.url).toBe('https://api.anthropic.com/v1/models?limit=1');
    expect(buildProbeRequest('bedrock', null, KEY)).toBeUndefined();
  });

  it('an unknown kind without api_base is unknown (unsupported), with no request', async () => {
    const before = fake.requests.length;
    const obs = await probeProvider({ kind: 'bedrock', apiBase: null, apiKey: KEY, degradedMs: 2000 }, { timeoutMs: 2000 });
    expect(obs).toMatchObject({ status: 'unknown', reason: 'unsupported' });
    expect(fake.requests.length).toBe(before);
  });

  it('an api_base with credentials in it is refused before any request', async () => {
    const obs = await probeProvider({ kind: 'openai', apiBase: `http://user:pw@127.0.0.1:1/v1`, apiKey: KEY, degradedMs: 2000 }, { timeoutMs: 2000 });
    expect(obs).toMatchObject({ status: 'down', reason: 'unreachable', detail: 'the api_base is not a usable http(s) URL' });
  });

  it('LiteLLM: liveliness and readiness, its version, not ready, and down', async () => {
    const ok = await probeLitellm(fake.base('llm'), { timeoutMs: 2000 });
    expect(ok).toMatchObject({ status: 'healthy', reason: 'ok', httpStatus: 200, version: '1.81.15' });
    expect(fake.requestsFor('llm').map((r) => r.path).sort()).toEqual(['/llm/health/liveliness', '/llm/health/readiness']);
    fake.setMode('llm-nr', 'not_ready');
    const notReady = await probeLitellm(fake.base('llm-nr'), { timeoutMs: 2000 });
    expect(notReady).toMatchObject({ status: 'degraded', reason: 'not_ready', httpStatus: 503 });
    expect(notReady.detail).toBe('readiness answered HTTP 503 (status=unhealthy, db=Not connected)');
    const down = await probeLitellm(`http://127.0.0.1:${await closedPort()}`, { timeoutMs: 2000 });
    expect(down).toMatchObject({ status: 'down', reason: 'unreachable', detail: 'liveliness: connection refused' });
  });
});

describe('hysteresis', () => {
  const t = { fail: 2, recover: 2 };
  const healthy = { status: 'healthy' as const, reason: 'ok' };
  const down = { status: 'down' as const, reason: 'server_error' };

  it('turns down only after 2 failures in a row, and healthy again only after 2 successes', () => {
    let s = nextState({ status: 'healthy', reason: 'ok', okStreak: 5, failStreak: 0 }, down, t);
    expect(s).toMatchObject({ status: 'healthy', failStreak: 1, changed: false });
    s = nextState(s, healthy, t);
    expect(s).toMatchObject({ status: 'healthy', failStreak: 0, okStreak: 1 });
    s = nextState(s, down, t);
    s = nextState(s, down, t);
    expect(s).toMatchObject({ status: 'down', reason: 'server_error', changed: true });
    s = nextState(s, healthy, t);
    expect(s).toMatchObject({ status: 'down', okStreak: 1, changed: false });
    s = nextState(s, down, t);
    expect(s).toMatchObject({ status: 'down', okStreak: 0, changed: false });
    s = nextState(s, healthy, t);
    s = nextState(s, healthy, t);
    expect(s).toMatchObject({ status: 'healthy', reason: 'ok', changed: true });
  });

  it('takes the first result of a never-checked provider at once, and honours other thresholds', () => {
    expect(nextState({ status: 'unknown', reason: 'never_checked', okStreak: 0, failStreak: 0 }, down, t)).toMatchObject({ status: 'down', changed: true });
    let s = nextState({ status: 'healthy', reason: 'ok', okStreak: 1, failStreak: 0 }, down, { fail: 3, recover: 1 });
    s = nextState(s, down, { fail: 3, recover: 1 });
    expect(s.status).toBe('healthy');
    s = nextState(s, down, { fail: 3, recover: 1 });
    expect(s.status).toBe('down');
    expect(nextState(s, healthy, { fail: 3, recover: 1 }).status).toBe('healthy');
  });

  it('a slow or rate-limited provider degrades with the same hysteresis; no key is unknown at once', () => {
    let s = nextState({ status: 'healthy', reason: 'ok', okStreak: 3, failStreak: 0 }, { status: 'degraded', reason: 'slow' }, t);
    expect(s.status).toBe('healthy');
    s = nextState(s, { status: 'degraded', reason: 'rate_limited' }, t);
    expect(s).toMatchObject({ status: 'degraded', reason: 'rate_limited' });
    expect(nextState(s, { status: 'unknown', reason: 'no_key' }, t)).toMatchObject({ status: 'unknown', reason: 'no_key', okStreak: 0, failStreak: 0, changed: true });
  });
});

describe('mapLimit', () => {
  it('never runs more than the limit at once and keeps the order', async () => {
    let running = 0;
    let peak = 0;
    const out = await mapLimit([...Array(40).keys()], 7, async (i) => {
      running++;
      peak = Math.max(peak, running);
      await new Promise((r) => setImmediate(r));
      running--;
      return i * 2;
    });
    expect(peak).toBe(7);
    expect(out).toEqual([...Array(40).keys()].map((i) => i * 2));
  });
});
