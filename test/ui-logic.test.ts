import { latencyChart } from '../ui/src/logic/chart';
import { diffCounts, diffLines } from '../ui/src/logic/diff';
import { compactJson, creditText, skippedText, warningText, expiryStanding, keyStateLook, latencyText, relativeTime, resultLook, shortFingerprint, statusLook } from '../ui/src/logic/format';
import { groupDeployments, routingLines } from '../ui/src/logic/models';
import { apiPathProblem, idempotencyKey, seg } from '../ui/src/logic/paths';
import { problemOf } from '../ui/src/logic/problem';
import { can, pageFromHash, pagesFor } from '../ui/src/logic/roles';
import { attrProblem } from '../ui/src/logic/safe-attr';
import { pollInterval, POLL_MS, SseParser } from '../ui/src/logic/sse';
import { budgetText, graceBody, limitsText, virtualKeyBody } from '../ui/src/logic/virtual-keys';

/** Issue 13: the dashboard's logic, without a browser (the pages only put these results on screen). */

const NOW = Date.parse('2026-03-01T12:00:00Z');
const ago = (ms: number): string => new Date(NOW - ms).toISOString();

describe('states read in words, not colour alone', () => {
  it('every provider status has a symbol and a word, and an unknown one is shown as it came', () => {
    for (const s of ['healthy', 'degraded', 'down', 'unknown']) {
      const look = statusLook(s);
      expect(look.text).toBe(s);
      expect(look.icon).not.toBe('');
    }
    expect(new Set(['healthy', 'degraded', 'down', 'unknown'].map((s) => statusLook(s).icon)).size).toBe(4);
    expect(statusLook(null)).toMatchObject({ text: 'unknown', tone: 'unknown' });
    expect(statusLook('weird')).toMatchObject({ text: 'weird', tone: 'unknown' });
  });

  it('a pool key says whether it is in service and why not', () => {
    expect(keyStateLook('active', null)).toMatchObject({ text: 'in service', inService: true, tone: 'ok' });
    expect(keyStateLook('disabled', 'auth_failed')).toMatchObject({ text: 'out of service (auth_failed)', inService: false, tone: 'bad' });
    expect(keyStateLook('cooling', 'rate_limited')).toMatchObject({ text: 'cooling (rate_limited), still in service', inService: true, tone: 'warn' });
    expect(keyStateLook('retiring', 'rotated').inService).toBe(true);
    expect(keyStateLook(null, null)).toMatchObject({ inService: false, tone: 'unknown' });
  });

  it('reload and render results', () => {
    expect(resultLook('ok')).toMatchObject({ icon: '✔', tone: 'ok' });
    expect(resultLook('failed')).toMatchObject({ icon: '✖', tone: 'bad' });
    expect(resultLook('rolled-back')).toMatchObject({ text: 'rolled-back', tone: 'bad' });
    expect(resultLook(undefined).text).toBe('none yet');
  });
});

describe('numbers and times', () => {
  it('latency', () => {
    expect(latencyText(null)).toBe('no latency');
    expect(latencyText(42.4)).toBe('42 ms');
    expect(latencyText(1500)).toBe('1.5 s');
    expect(latencyText(12_400)).toBe('12 s');
  });

  it('relative times, past and future', () => {
    expect(relativeTime(null, NOW)).toBe('never');
    expect(relativeTime(ago(2000), NOW)).toBe('just now');
    expect(relativeTime(ago(5 * 60_000 + 10), NOW)).toBe('5 min ago');
    expect(relativeTime(ago(3 * 3_600_000), NOW)).toBe('3 h ago');
    expect(relativeTime(ago(-2 * 86_400_000), NOW)).toBe('in 2 d');
    expect(relativeTime('garbage', NOW)).toBe('unknown time');
  });

  it('an expiry within 14 days stands out, an expired one more so', () => {
    expect(expiryStanding(null, NOW)).toEqual({ level: 'none', text: 'no expiry' });
    expect(expiryStanding(ago(-30 * 86_400_000), NOW)).toEqual({ level: 'ok', text: 'expires 2026-03-31' });
    expect(expiryStanding(ago(-3.5 * 86_400_000), NOW)).toEqual({ level: 'expiring', text: 'expires in 3 days (2026-03-05)' });
    expect(expiryStanding(ago(-3_600_000), NOW)).toEqual({ level: 'expiring', text: 'expires within a day (2026-03-01)' });
    expect(expiryStanding(ago(2 * 86_400_000), NOW)).toEqual({ level: 'expired', text: 'expired 2 d ago (2026-02-27)' });
  });

  it('credit as the provider reports it', () => {
    expect(creditText(null)).toEqual({ text: 'not reported', low: false });
    expect(creditText({ limit: 100, usage: 95, remaining: 5, low: true })).toEqual({ text: '5.00 of 100 left (5%), low', low: true });
    expect(creditText({ limit: null, remaining: null })).toEqual({ text: 'not reported', low: false });
    expect(creditText({ limit: null, remaining: 12 })).toEqual({ text: '12.00 left (no limit)', low: false });
  });

  it('what a render left out, and its warnings, in words', () => {
    expect(skippedText({ id: 'x', model_name: 'claude', provider: 'openrouter', reason: 'no_key_in_service', detail: 'openrouter' })).toBe('claude via openrouter: no key in service (openrouter)');
    expect(skippedText({ model_name: 'gpt', provider: 'openai', reason: 'key_disabled', key: 'oa-b' })).toBe('gpt via openai, key oa-b: key disabled');
    expect(skippedText({ odd: true })).toBe('{"odd":true}');
    expect(warningText({ kind: 'secret_param_dropped', model_id: 'm1', param: 'api_key' })).toBe('secret param dropped: model_id m1, param api_key');
    expect(warningText({ kind: 'routing_entry_dropped' })).toBe('routing entry dropped');
    expect(warningText('plain')).toBe('plain');
  });

  it('fingerprints and details are cut to fit, whole in the title', () => {
    expect(shortFingerprint('hmac-sha256:0123456789abcdef0123')).toBe('0123456789ab…');
    expect(shortFingerprint(undefined)).toBe('–');
    expect(compactJson({ a: 'x'.repeat(400) }).length).toBe(300);
    expect(compactJson(null)).toBe('');
  });
});

describe('the latency chart', () => {
  const probe = (status: string, latency: number | null, i: number) => ({ status, latency_ms: latency, checked_at: ago(i * 60_000) });

  it('draws oldest to newest, scaled from 0, breaking the line where a probe failed', () => {
    // Newest first, as the API pages history.
    const history = [probe('healthy', 100, 0), probe('down', null, 1), probe('healthy', 50, 2), probe('healthy', 0, 3)];
    const c = latencyChart(history, 100, 20);
    expect(c.path).toBe('M2 18 L34 10 M98 2');
    expect(c.failures).toEqual([66]);
    expect(c.summary).toBe('4 probes, latency 0 ms to 100 ms, last 100 ms, 1 failed');
  });

  it('says so when there is nothing to draw', () => {
    expect(latencyChart([])).toMatchObject({ path: '', failures: [], summary: 'no probes yet' });
    expect(latencyChart([probe('down', 5, 0)]).summary).toBe('1 probe, 1 failed');
  });
});

describe('server-sent events, read with fetch', () => {
  it('parses events across any chunking, with comments, CRLF, several data lines and retry', () => {
    const text = 'retry: 5000\r\nevent: hello\r\ndata: {"leader":true}\r\n\r\n: ping\n\nevent: change\ndata: a\ndata: b\n\ndata: plain\n\n';
    for (const size of [1, 2, 3, 7, text.length]) {
      const p = new SseParser();
      const events = [];
      for (let i = 0; i < text.length; i += size) events.push(...p.push(text.slice(i, i + size)));
      expect(events).toEqual([
        { event: 'hello', data: '{"leader":true}' },
        { event: 'change', data: 'a\nb' },
        { event: 'message', data: 'plain' },
      ]);
      expect(p.retryMs).toBe(5000);
    }
  });

  it('an event without data is not dispatched, and the event name does not leak into the next', () => {
    const p = new SseParser();
    expect(p.push('event: x\n\ndata: y\n\n')).toEqual([{ event: 'message', data: 'y' }]);
  });

  it('polls while the stream is down or this instance does not lead, not otherwise', () => {
    expect(pollInterval({ connected: true, leader: true })).toBeNull();
    expect(pollInterval({ connected: true, leader: false })).toBe(POLL_MS);
    expect(pollInterval({ connected: false, leader: true })).toBe(POLL_MS);
    expect(POLL_MS).toBe(5000);
  });
});

describe('roles decide what is shown', () => {
  it('a viewer sees no button that changes anything, and no audit page', () => {
    for (const a of ['rotate', 'disable', 'rollback', 'delete-key', 'sync-now', 'health-check', 'virtual-key-issue', 'virtual-key-delete', 'audit'] as const) expect(can('viewer', a)).toBe(false);
    expect(pagesFor('viewer').map((p) => p.id)).toEqual(['overview', 'keys', 'virtual-keys', 'models', 'sync']);
  });

  it('an operator rotates provider keys and deletes virtual keys, but neither issues virtual keys nor reads the audit trail; an admin does everything', () => {
    expect(can('operator', 'rotate')).toBe(true);
    expect(can('operator', 'virtual-key-delete')).toBe(true);
    expect(can('operator', 'virtual-key-issue')).toBe(false);
    expect(can('operator', 'audit')).toBe(false);
    expect(can('admin', 'virtual-key-issue')).toBe(true);
    expect(pagesFor('admin').map((p) => p.id)).toContain('audit');
    expect(can('admin', 'delete-key')).toBe(true);
  });

  it('routes by hash, anything unknown is the overview', () => {
    expect(pageFromHash('#/keys')).toBe('keys');
    expect(pageFromHash('#/virtual-keys')).toBe('virtual-keys');
    expect(pageFromHash('#/nope')).toBe('overview');
    expect(pageFromHash('')).toBe('overview');
  });
});

describe('errors are shown as the API wrote them', () => {
  it('takes title, detail and field errors from problem+json', () => {
    const body = JSON.stringify({ type: 'x', title: 'Validation failed', status: 400, detail: 'api_key: is required', errors: [{ field: 'api_key', rule: 'is required' }, { bad: 1 }], request_id: 'r1' });
    expect(problemOf(400, 'Bad Request', 'application/problem+json', body)).toEqual({
      status: 400,
      title: 'Validation failed',
      detail: 'api_key: is required',
      errors: [{ field: 'api_key', rule: 'is required' }],
      requestId: 'r1',
    });
  });

  it('falls back to the status line for anything else', () => {
    expect(problemOf(502, 'Bad Gateway', 'text/html', '<html>')).toMatchObject({ title: 'Bad Gateway', detail: 'the server answered 502' });
    expect(problemOf(500, '', 'application/json', 'not json')).toMatchObject({ title: 'HTTP 500' });
    expect(problemOf(500, 'x', 'application/json', '[1]')).toMatchObject({ title: 'x', errors: [] });
  });
});

describe('what the page may do', () => {
  it('never asks for a decrypted key, and calls only the API', () => {
    expect(apiPathProblem('/api/v1/admin/platform-keys/openrouter/decrypted')).toMatch(/never reads a decrypted key/);
    expect(apiPathProblem('/api/v1/admin/platform-keys/openrouter/DECRYPTED/?x=1')).toBeDefined();
    expect(apiPathProblem('/api/v1/admin/platform-keys/openrouter/versions')).toBeUndefined();
    expect(apiPathProblem('https://elsewhere.example/api/v1/x')).toBeDefined();
    expect(seg('a/../b')).toBe('a%2F..%2Fb');
  });

  it('refuses attributes that could run script or break the policy', () => {
    expect(attrProblem('onclick', 'x()')).toBeDefined();
    expect(attrProblem('OnError', 'x()')).toBeDefined();
    expect(attrProblem('style', 'color: red')).toBeDefined();
    expect(attrProblem('href', 'javascript:alert(1)')).toBeDefined();
    expect(attrProblem('href', '//evil.example/')).toBeDefined();
    expect(attrProblem('src', 'data:image/png;base64,xx')).toBeDefined();
    expect(attrProblem('href', '#/keys')).toBeUndefined();
    expect(attrProblem('href', '/ui/favicon.svg')).toBeUndefined();
    expect(attrProblem('title', 'javascript:alert(1)')).toBeUndefined();
    expect(attrProblem('aria-label', '<img src=x onerror=alert(1)>')).toBeUndefined();
  });

  it('makes a fresh printable Idempotency-Key per dialog', () => {
    let n = 0;
    const random = (b: Uint8Array): Uint8Array => b.map(() => n++);
    const a = idempotencyKey(random);
    expect(a).toBe('ui-000102030405060708090a0b0c0d0e0f');
    expect(idempotencyKey(random)).not.toBe(a);
    expect(a).toMatch(/^[\x21-\x7e]{1,255}$/);
  });
});

describe('the diff of the next render', () => {
  it('marks lines by what they do', () => {
    const d = '--- config.yaml\n+++ config.yaml\n@@ -1,2 +1,2 @@\n model_list:\n-  a: 1\n+  a: 2\n';
    expect(diffLines(d).map((l) => l.kind)).toEqual(['meta', 'meta', 'hunk', 'ctx', 'del', 'add']);
    expect(diffCounts(d)).toEqual({ added: 1, removed: 1 });
    expect(diffLines('')).toEqual([]);
  });
});

describe('models and routing', () => {
  it('groups deployments by model name and says where an alias or fallback leads nowhere', () => {
    const d = (id: string, model_name: string, provider: string) => ({ id, model_name, provider, model: 'm' });
    const groups = groupDeployments([d('1', 'gpt', 'oa2'), d('2', 'claude', 'an'), d('3', 'gpt', 'oa1')]);
    expect(groups.map((g) => [g.modelName, g.deployments.map((x) => x.provider)])).toEqual([
      ['claude', ['an']],
      ['gpt', ['oa1', 'oa2']],
    ]);
    const lines = routingLines({ aliases: { fast: 'gpt', broken: 'nothing' }, fallbacks: { gpt: ['claude', 'gone'] } }, new Set(['gpt', 'claude']));
    expect(lines.aliases).toEqual([
      { from: 'broken', to: ['nothing'], missing: ['nothing'] },
      { from: 'fast', to: ['gpt'], missing: [] },
    ]);
    expect(lines.fallbacks).toEqual([{ from: 'gpt', to: ['claude', 'gone'], missing: ['gone'] }]);
    expect(routingLines({}, new Set())).toEqual({ aliases: [], fallbacks: [] });
  });
});

describe('the virtual keys form', () => {
  it('sends what was filled in, as the API types it', () => {
    expect(virtualKeyBody({ alias: ' team-a ', models: 'gpt, claude gpt', max_budget: '12.5', budget_duration: '1mo', rpm_limit: '60', tpm_limit: '', duration: '90d' })).toEqual({
      body: { alias: 'team-a', models: ['gpt', 'claude'], max_budget: 12.5, budget_duration: '1mo', rpm_limit: 60, duration: '90d' },
    });
    expect(virtualKeyBody({ alias: 'x' })).toEqual({ body: { alias: 'x' } });
  });

  it('names each field it cannot send', () => {
    expect(virtualKeyBody({ alias: '', max_budget: '-1', rpm_limit: '1.5', tpm_limit: 'lots', budget_duration: 'monthly', duration: '500ms' })).toEqual({
      errors: [
        { field: 'alias', rule: 'is required' },
        { field: 'max_budget', rule: 'must be a number, 0 or more' },
        { field: 'rpm_limit', rule: 'must be a whole number, 0 or more' },
        { field: 'tpm_limit', rule: 'must be a whole number, 0 or more' },
        { field: 'budget_duration', rule: 'must be a whole number and s, m, h, d, w or mo, such as 30d' },
        { field: 'duration', rule: 'must be a whole number and s, m, h, d, w or mo, such as 30d' },
      ],
    });
  });

  it('grace periods, budgets and limits', () => {
    expect(graceBody(' 10m ')).toEqual({ body: { grace_period: '10m' } });
    expect(graceBody('soon')).toEqual({ errors: [{ field: 'grace_period', rule: 'must be a duration such as 10m, 1h or 1d' }] });
    expect(budgetText(12.5, 100, '30d')).toBe('12.50 spent of 100.00 per 30d');
    expect(budgetText(undefined, null, null)).toBe('0.00 spent, no budget');
    expect(limitsText(60, undefined)).toBe('60 rpm');
    expect(limitsText(null, null)).toBe('no limits');
  });
});
