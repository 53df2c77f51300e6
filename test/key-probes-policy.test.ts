import { combineFindings, creditOf, keyFinding, parseRetryAfter, RETRY_AFTER_MAX_MS, type KeyFinding } from '../src/health/key-findings';
import type { KeyHealthRow } from '../src/health/key-health-store';
import { COOL_DEFAULT_MS, decideKey, type KeyNow, type KeyPolicy } from '../src/health/key-policy';
import type { ProbeAnswer } from '../src/health/probes';
import { loadSettings, ConfigError } from '../src/config';

/** The rules of key-findings.ts and key-policy.ts, on their own (the end-to-end cases are in key-probes.test.ts). */
const NOW = new Date('2025-03-01T12:00:00Z');
const KEY = 'sk-policy-test-key-0000000001';
const POLICY: KeyPolicy = { recoverPasses: 2, recheck: { minMs: 30_000, maxMs: 300_000 }, creditAlert: 0.1 };

const answer = (status: number, body: unknown, retryAfter?: string): Extract<ProbeAnswer, { kind: 'answer' }> => ({
  kind: 'answer',
  endpoint: 'GET /v1/models',
  status,
  latencyMs: 5,
  body: body === undefined ? '' : JSON.stringify(body),
  retryAfter,
  checkedAt: NOW,
});
const finding = (outcome: KeyFinding['outcome'], extra: Partial<KeyFinding> = {}): KeyFinding => ({
  outcome,
  endpoint: 'GET /v1/models',
  httpStatus: 200,
  detail: 'x',
  latencyMs: 5,
  checkedAt: NOW,
  retryAfterMs: null,
  credit: null,
  ...extra,
});
const key = (state: KeyNow['state'], reason: string | null = null, until: Date | null = null, version = 1): KeyNow => ({ state, state_reason: reason, state_until: until, current_version: version });
const prevOf = (h: Partial<KeyHealthRow>): KeyHealthRow => ({
  name: 'k',
  outcome: 'ok',
  http_status: 200,
  endpoint: null,
  detail: null,
  latency_ms: null,
  key_version: 1,
  checked_at: NOW,
  ok_streak: 0,
  fail_streak: 0,
  next_probe_at: null,
  credit_limit: null,
  credit_usage: null,
  credit_remaining: null,
  credit_checked_at: null,
  credit_low: false,
  ...h,
});

describe('what an answer proves about a key', () => {
  it.each([
    [200, { data: [] }, undefined, 'ok'],
    [401, { error: { type: 'invalid_request_error', code: 'invalid_api_key' } }, undefined, 'auth_failed'],
    [403, { type: 'error', error: { type: 'permission_error' } }, undefined, 'auth_failed'],
    [400, { error: { status: 'INVALID_ARGUMENT', details: [{ reason: 'API_KEY_INVALID' }] } }, undefined, 'auth_failed'],
    [402, { error: { code: 402, message: 'Insufficient credits' } }, undefined, 'quota_exhausted'],
    [429, { error: { type: 'insufficient_quota', code: 'insufficient_quota' } }, undefined, 'quota_exhausted'],
    [429, { error: { type: 'rate_limit_error' } }, '7', 'rate_limited'],
    [500, { error: { type: 'server_error' } }, undefined, 'error'],
    [404, {}, undefined, 'error'],
  ] as const)('HTTP %i %j (Retry-After %s) is %s', (status, body, retryAfter, outcome) => {
    const f = keyFinding(answer(status, body, retryAfter), KEY, NOW);
    expect(f.outcome).toBe(outcome);
    expect(f.httpStatus).toBe(status);
    if (outcome === 'rate_limited') expect(f.retryAfterMs).toBe(7000);
  });

  it('an outage, a body that is not JSON and an unsupported kind prove nothing about the key', () => {
    expect(keyFinding({ kind: 'network', endpoint: 'GET /v1/models', network: 'timeout', latencyMs: 9, detail: 'no answer', checkedAt: NOW }, KEY, NOW).outcome).toBe('error');
    expect(keyFinding({ ...answer(200, undefined), body: '<html>' }, KEY, NOW).outcome).toBe('error');
    expect(keyFinding({ kind: 'unsupported', detail: 'no probe' }, KEY, NOW)).toMatchObject({ outcome: 'no_probe', endpoint: null });
  });

  it('never copies a provider code that holds the key', () => {
    const f = keyFinding(answer(401, { error: { code: KEY } }), KEY, NOW);
    expect(f.detail).not.toContain(KEY);
  });

  it("reads OpenRouter's key record: credit, no limit, spent", () => {
    expect(creditOf({ data: { limit: 100, usage: 40, limit_remaining: 60 } })).toEqual({ limit: 100, usage: 40, remaining: 60 });
    expect(creditOf({ data: { limit: 100, usage: 40 } })).toEqual({ limit: 100, usage: 40, remaining: 60 });
    expect(creditOf({ data: { limit: null, usage: 3, limit_remaining: null } })).toEqual({ limit: null, usage: 3, remaining: null });
    expect(creditOf({ data: [{ id: 'a-model' }] })).toBeNull();
    expect(keyFinding(answer(200, { data: { limit: 10, usage: 10, limit_remaining: 0 } }), KEY, NOW).outcome).toBe('quota_exhausted');
  });

  it('Retry-After: seconds, an HTTP date, nonsense, capped', () => {
    expect(parseRetryAfter('30', NOW)).toBe(30_000);
    expect(parseRetryAfter(new Date(NOW.getTime() + 90_000).toUTCString(), NOW)).toBe(90_000);
    expect(parseRetryAfter(new Date(NOW.getTime() - 90_000).toUTCString(), NOW)).toBe(0);
    expect(parseRetryAfter('soon', NOW)).toBeNull();
    expect(parseRetryAfter(undefined, NOW)).toBeNull();
    expect(parseRetryAfter('999999', NOW)).toBe(RETRY_AFTER_MAX_MS);
  });

  it('a key in several pools takes the worst outcome, and any credit reported', () => {
    const credit = { limit: 5, usage: 1, remaining: 4 };
    expect(combineFindings([finding('ok', { credit }), finding('auth_failed')])).toMatchObject({ outcome: 'auth_failed', credit });
    expect(combineFindings([finding('error'), finding('ok')]).outcome).toBe('ok');
    expect(combineFindings([finding('rate_limited', { retryAfterMs: 5 }), finding('rate_limited', { retryAfterMs: 50 })]).retryAfterMs).toBe(50);
    expect(combineFindings([finding('not_approved'), finding('no_probe')]).outcome).toBe('not_approved');
  });
});

describe('what a finding does to a key', () => {
  it('one refusal disables an active key; the recheck backs off, doubling up to the max', () => {
    const first = decideKey('k', key('active'), undefined, finding('auth_failed'), POLICY, NOW);
    expect(first.change).toMatchObject({ state: 'disabled', reason: 'auth_failed' });
    const gaps: number[] = [];
    let prev = first.health;
    for (let i = 0; i < 6; i++) {
      const d = decideKey('k', key('disabled', 'auth_failed'), prev, finding('auth_failed'), POLICY, NOW);
      expect(d.change).toBeUndefined();
      gaps.push(d.health.next_probe_at!.getTime() - NOW.getTime());
      prev = d.health;
    }
    expect(first.health.next_probe_at!.getTime() - NOW.getTime()).toBe(30_000);
    expect(gaps).toEqual([60_000, 120_000, 240_000, 300_000, 300_000, 300_000]);
  });

  it('comes back after recoverPasses good probes in a row; an outage in between neither counts nor breaks the run, a refusal does', () => {
    const disabled = key('disabled', 'quota_exhausted');
    let h = prevOf({ outcome: 'quota_exhausted', fail_streak: 3 });
    const pass1 = decideKey('k', disabled, h, finding('ok'), POLICY, NOW);
    expect(pass1.change).toBeUndefined();
    expect(pass1.health.next_probe_at!.getTime() - NOW.getTime()).toBe(30_000);
    h = decideKey('k', disabled, pass1.health, finding('error'), POLICY, NOW).health;
    expect(h.ok_streak).toBe(1);
    const refused = decideKey('k', disabled, h, finding('quota_exhausted'), POLICY, NOW);
    expect(refused.health.ok_streak).toBe(0);
    const a = decideKey('k', disabled, refused.health, finding('ok'), POLICY, NOW);
    const b = decideKey('k', disabled, a.health, finding('ok'), POLICY, NOW);
    expect(a.change).toBeUndefined();
    expect(b.change).toEqual({ state: 'active', reason: null });
    expect(b.health.next_probe_at).toBeNull();
  });

  it('a new version starts the count afresh', () => {
    const h = prevOf({ ok_streak: 1, key_version: 1 });
    const d = decideKey('k', key('disabled', 'auth_failed', null, 2), h, finding('ok'), POLICY, NOW);
    expect(d.change).toBeUndefined();
    expect(d.health).toMatchObject({ ok_streak: 1, key_version: 2 });
  });

  it('never moves a manual, replaced or retiring key', () => {
    const until = new Date(NOW.getTime() + 60_000);
    for (const k of [key('disabled', 'manual'), key('disabled', 'replaced'), key('retiring', 'rotated', until)]) {
      for (const o of ['ok', 'auth_failed', 'quota_exhausted', 'rate_limited'] as const) {
        const d = decideKey('k', k, prevOf({ ok_streak: 10 }), finding(o), POLICY, NOW);
        expect(d.change).toBeUndefined();
        expect(d.health.next_probe_at).toBeNull();
      }
    }
  });

  it('cooling: until Retry-After or the default; a good probe after the time ends it, another 429 cools again', () => {
    expect(decideKey('k', key('active'), undefined, finding('rate_limited', { retryAfterMs: 5000 }), POLICY, NOW).change).toMatchObject({
      state: 'cooling',
      reason: 'rate_limited',
      until: new Date(NOW.getTime() + 5000),
    });
    expect(decideKey('k', key('active'), undefined, finding('rate_limited'), POLICY, NOW).change?.until).toEqual(new Date(NOW.getTime() + COOL_DEFAULT_MS));
    const later = new Date(NOW.getTime() + 1000);
    const past = new Date(NOW.getTime() - 1000);
    expect(decideKey('k', key('cooling', 'rate_limited', later), undefined, finding('ok'), POLICY, NOW).change).toBeUndefined();
    expect(decideKey('k', key('cooling', 'rate_limited', later), undefined, finding('rate_limited'), POLICY, NOW).change).toBeUndefined();
    expect(decideKey('k', key('cooling', 'rate_limited', past), undefined, finding('ok'), POLICY, NOW).change).toEqual({ state: 'active', reason: null });
    expect(decideKey('k', key('cooling', 'rate_limited', past), undefined, finding('rate_limited'), POLICY, NOW).change).toMatchObject({ state: 'cooling' });
    expect(decideKey('k', key('cooling', 'rate_limited', later), undefined, finding('auth_failed'), POLICY, NOW).change).toMatchObject({ state: 'disabled', reason: 'auth_failed' });
    expect(decideKey('k', key('active'), undefined, finding('error'), POLICY, NOW).change).toBeUndefined();
  });

  it('credit: low once per crossing, re-armed above the line, unchanged when a probe reports none, off at 0', () => {
    const credit = (remaining: number) => ({ credit: { limit: 100, usage: 100 - remaining, remaining } });
    const a = decideKey('k', key('active'), undefined, finding('ok', credit(50)), POLICY, NOW);
    expect(a.credit).toBeUndefined();
    const b = decideKey('k', key('active'), a.health, finding('ok', credit(9)), POLICY, NOW);
    expect(b.credit).toBe('low');
    const c = decideKey('k', key('active'), b.health, finding('ok', credit(5)), POLICY, NOW);
    expect(c.credit).toBeUndefined();
    const d = decideKey('k', key('active'), c.health, finding('error'), POLICY, NOW);
    expect(d).toMatchObject({ health: { credit_low: true, credit_checked_at: null } });
    expect(d.credit).toBeUndefined();
    const e = decideKey('k', key('active'), d.health, finding('ok', credit(20)), POLICY, NOW);
    expect(e.credit).toBe('rearmed');
    expect(decideKey('k', key('active'), e.health, finding('ok', credit(1)), { ...POLICY, creditAlert: 0 }, NOW).credit).toBeUndefined();
  });
});

describe('settings', () => {
  it('KEYPLANE_KEY_RECHECK and KEYPLANE_CREDIT_ALERT', () => {
    const s = loadSettings({});
    expect(s.keyRecheck).toEqual({ minMs: 30_000, maxMs: 300_000 });
    expect(s.creditAlert).toBe(0.1);
    expect(loadSettings({ KEYPLANE_KEY_RECHECK: '10s:2m', KEYPLANE_CREDIT_ALERT: '25%' })).toMatchObject({ keyRecheck: { minMs: 10_000, maxMs: 120_000 }, creditAlert: 0.25 });
    expect(loadSettings({ KEYPLANE_CREDIT_ALERT: '0' }).creditAlert).toBe(0);
    for (const [env, raw, problem] of [
      ['KEYPLANE_KEY_RECHECK', '10m', /too long: at most 5m/],
      ['KEYPLANE_KEY_RECHECK', '2m:1m', /below min/],
      ['KEYPLANE_KEY_RECHECK', '30', /unit/],
      ['KEYPLANE_CREDIT_ALERT', '1', /fraction/],
      ['KEYPLANE_CREDIT_ALERT', '-0.1', /fraction/],
    ] as const) {
      expect(() => loadSettings({ [env]: raw })).toThrow(ConfigError);
      expect(() => loadSettings({ [env]: raw })).toThrow(problem);
    }
  });
});
