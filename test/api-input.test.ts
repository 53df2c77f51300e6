import http from 'node:http';
import request from 'supertest';
import { appendAudit } from '../src/features/audit/audit-store';
import { withTransaction } from '../src/db/pool';
import { startTestApp, type TestApp } from './helpers/app';

/** Issue 8, the API's input side: every bad input is a 400 naming the field, and what is validated is what is stored. */

const GOOD = 'sk-input-test-aaaaaaaaaaaaaaaa';

interface FieldErrorBody {
  field: string;
  rule: string;
}
const fields = (body: { errors?: FieldErrorBody[] }): string[] => (body.errors ?? []).map((e) => e.field);

describe('API input', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp();
  });
  afterAll(async () => {
    await t.close();
  });

  describe('key values (item 2)', () => {
    it.each([
      ['sk-aaaa;id>/tmp/x', "';' (U+003B) at position 8"],
      ['sk-aaaa(bbbb', "'(' (U+0028) at position 8"],
      ['sk-aaaa$(id)', "'$' (U+0024) at position 8"],
      ['sk-aaaa bbbb', 'U+0020 at position 8'],
      ['"sk-quoted"', `'"' (U+0022) at position 1`],
      ['os.environ/OPENAI_API_KEY', 'not an os.environ/ reference'],
    ])('PUT platform key %j -> 400 naming the character, never echoing the value', async (value, rule) => {
      const res = await t.api().put('/api/v1/admin/platform-keys/inject').send({ api_key: value }).expect(400);
      expect(res.type).toBe('application/problem+json');
      expect(res.body.errors).toEqual([{ field: 'api_key', rule: expect.stringContaining(rule) }]);
      expect(JSON.stringify(res.body)).not.toContain(value);
      const byok = await t.api().post('/api/v1/llm/byok/keys').send({ provider: 'openai', api_key: value }).expect(400);
      expect(fields(byok.body)).toEqual(['api_key']);
      expect(JSON.stringify(byok.body)).not.toContain(value);
    });
    it('accepts the characters every provider key uses', async () => {
      await t.api().put('/api/v1/admin/platform-keys/inject').send({ api_key: 'sk-ant-api03_AbC.d+e/f==:g@h,i' }).expect(200);
    });
  });

  describe('env vars (item 4)', () => {
    it.each(['DATABASE_URL', 'HTTPS_PROXY', 'LD_PRELOAD', 'PYTHONPATH', 'NODE_OPTIONS', 'LITELLM_MASTER_KEY', 'LITELLM_SALT_KEY'])('%s on an ordinary key -> 400', async (envVar) => {
      const res = await t.api().put('/api/v1/admin/platform-keys/ordinary').send({ api_key: GOOD, env_var: envVar }).expect(400);
      expect(fields(res.body)).toEqual(['env_var']);
      await t.api().get('/api/v1/admin/platform-keys/ordinary').expect(404);
    });
    it('litellm_master_key takes LITELLM_MASTER_KEY, and nothing else', async () => {
      await t.api().put('/api/v1/admin/platform-keys/litellm_master_key').send({ api_key: 'sk-master-aaaaaaaaaaaa', env_var: 'LITELLM_MASTER_KEY' }).expect(200);
      const other = await t.api().put('/api/v1/admin/platform-keys/litellm_master_key').send({ api_key: 'sk-master-bbbbbbbbbbbb', env_var: 'OTHER_API_KEY' }).expect(400);
      expect(other.body.errors).toEqual([{ field: 'env_var', rule: expect.stringContaining('must be LITELLM_MASTER_KEY') }]);
    });
    it('a denied default env var asks for env_var', async () => {
      const res = await t.api().put('/api/v1/admin/platform-keys/ld-preload').send({ api_key: GOOD }).expect(400);
      expect(res.body.errors).toEqual([{ field: 'env_var', rule: expect.stringMatching(/^is required here: the default LD_PRELOAD_API_KEY /) }]);
      await t.api().put('/api/v1/admin/platform-keys/ld-preload').send({ api_key: GOOD, env_var: 'PRELOAD_VENDOR_API_KEY' }).expect(200);
      // Rotating it later needs no env_var: the stored one is kept.
      await t.api().put('/api/v1/admin/platform-keys/ld-preload').send({ api_key: GOOD + 'b' }).expect(200);
    });
  });

  describe('api_base is stored exactly as validated (item 22)', () => {
    it.each([
      ['https://llm.example.com/v1\n', 'U+000A'],
      ['https://llm.example.com/\tv1', 'U+0009'],
      [' https://llm.example.com/v1', 'U+0020'],
      ['https://llm.example.com/v1 ', 'U+0020'],
      ['https://llm.example.com/\u202ev1', 'U+202E'],
      ['https:\\\\evil.example.com/v1', "'\\' (U+005C)"],
      ['https:evil.example.com/v1', 'must start with http:// or https://'],
      ['HTTPS://llm.example.com', 'must start with http:// or https://'],
      ['http://0x7f.1/v1', 'must write its host as it is read (127.0.0.1)'],
      ['http://[0::1]:4000', 'must write its host as it is read'],
      ['https://user:pw@llm.example.com', 'without user:password@'],
      ['https://llm.example.com:99999/v1', 'port'],
      ['ftp://llm.example.com', 'must start with http:// or https://'],
    ])('%j -> 400', async (apiBase, rule) => {
      const p = await t.api().put('/api/v1/admin/providers/odd').send({ kind: 'openai', api_base: apiBase }).expect(400);
      expect(p.body.errors).toEqual([{ field: 'api_base', rule: expect.stringContaining(rule) }]);
      const m = await t.api().post('/api/v1/admin/models').send({ model_name: 'm', provider: 'openai', model: 'x', api_base: apiBase }).expect(400);
      expect(fields(m.body)).toEqual(['api_base']);
    });
    it('a valid one comes back byte for byte (no trailing slash trimmed, no case folded)', async () => {
      for (const apiBase of ['https://LLM.example.com:8443/v1/', 'http://127.0.0.1:4000', 'http://[::1]:11434/api?x=1&y=%41']) {
        const res = await t.api().put('/api/v1/admin/providers/exact').send({ kind: 'openai', api_base: apiBase });
        expect(res.status === 200 || res.status === 201).toBe(true);
        expect(res.body.api_base).toBe(apiBase);
        expect((await t.api().get('/api/v1/admin/providers/exact').expect(200)).body.api_base).toBe(apiBase);
      }
    });
  });

  describe('timestamps (items 14, 16, 22)', () => {
    it.each([
      '2024-02-30',
      '2023-02-29',
      '2024-04-31',
      '0000-01-01T00:00:00Z',
      '1969-12-31',
      '10000-01-01',
      '2024-12-31T24:00:00Z',
      '2024-12-31T23:60:00Z',
      '2024-12-31T23:59:60Z',
      '2024-01-01T10:00:00',
      '2024-01-01T10:00:00+24:00',
      '2024-01-01 10:00:00Z',
      '2024-01-01T10:00:00.1234Z',
      '+002024-01-01',
      'tomorrow',
    ])('expires_at %j -> 400', async (ts) => {
      const res = await t.api().put('/api/v1/admin/platform-keys/expiring').send({ api_key: GOOD, expires_at: ts }).expect(400);
      expect(fields(res.body)).toEqual(['expires_at']);
    });
    it.each([
      ['2024-02-29', '2024-02-29T00:00:00.000Z'],
      ['9999-12-31T23:59:59.999Z', '9999-12-31T23:59:59.999Z'],
      ['2024-03-01T10:00:00+02:00', '2024-03-01T08:00:00.000Z'],
      ['2024-03-01T10:00-05:30', '2024-03-01T15:30:00.000Z'],
    ])('expires_at %j is stored as exactly that instant', async (ts, iso) => {
      const res = await t.api().put('/api/v1/admin/platform-keys/expiring').send({ api_key: GOOD, expires_at: ts }).expect(200);
      expect(res.body.expires_at).toBe(iso);
      const { rows } = await t.db.pool.query<{ e: string }>("SELECT to_char(expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') AS e FROM platform_keys WHERE name = 'expiring'");
      expect(rows[0]!.e).toBe(iso);
    });
  });

  describe('text that cannot be stored (item 16)', () => {
    it('NUL in a query parameter is a 400 naming it', async () => {
      const models = await t.api().get('/api/v1/admin/models?provider=%00').expect(400);
      expect(models.body.errors).toEqual([{ field: 'query.provider', rule: expect.stringContaining('U+0000') }]);
      const audit = await t.api().get('/api/v1/admin/audit?target=%00').expect(400);
      expect(fields(audit.body)).toEqual(['query.target']);
      const key = await t.api().get('/api/v1/admin/audit?%00=1').expect(400);
      expect(fields(key.body)).toEqual(['query.\\u0000']);
    });
    it('NUL and lone surrogates anywhere in a body, values and keys, are a 400 naming the field', async () => {
      const post = (body: string) => t.api().post('/api/v1/admin/models').set('content-type', 'application/json').send(body);
      const base = '"model_name":"m","provider":"openai","model":"x"';
      let res = await post(`{${base},"litellm_params":{"x":{"y":"a\\u0000b"}}}`).expect(400);
      expect(res.body.errors).toEqual([{ field: 'litellm_params.x.y', rule: 'contains, at position 2, U+0000 (NUL): it cannot be stored' }]);
      res = await post(`{${base},"litellm_params":{"x":["ok","\\ud800"]}}`).expect(400);
      expect(res.body.errors).toEqual([{ field: 'litellm_params.x.1', rule: expect.stringContaining('lone surrogate (U+D800)') }]);
      res = await post(`{${base},"model_info":{"a\\udc00b":1}}`).expect(400);
      expect(fields(res.body)).toEqual(['model_info.a\\udc00b']);
      res = await post(`{${base},"model_info":{"__proto__":{"x":1}}}`).expect(400);
      expect(fields(res.body)).toEqual(['model_info.__proto__']);
      // A valid pair is text like any other.
      await post(`{${base},"model_info":{"smile":"\\ud83d\\ude00"}}`).expect(201);
      const key = await t.api().put('/api/v1/admin/platform-keys/nul').set('content-type', 'application/json').send('{"api_key":"sk-aaaaaaaa\\u0000"}').expect(400);
      expect(fields(key.body)).toEqual(['api_key']);
    });
    it('every query parameter is validated: unknown ones, repeated ones and malformed numbers are 400s', async () => {
      expect(fields((await t.api().get('/api/v1/admin/platform-keys/inject?x=1').expect(400)).body)).toEqual(['query.x']);
      expect(fields((await t.api().get('/api/v1/admin/models?limit=0x10').expect(400)).body)).toEqual(['query.limit']);
      expect(fields((await t.api().get('/api/v1/admin/models?limit=1&limit=2').expect(400)).body)).toEqual(['query.limit']);
      expect(fields((await t.api().get('/api/v1/admin/models?provider=Bad%20Slug').expect(400)).body)).toEqual(['query.provider']);
      expect(fields((await t.api().get('/api/v1/admin/models?model_name=a%20b').expect(400)).body)).toEqual(['query.model_name']);
    });
    it('a malformed body or path is a 400 that names what could not be read', async () => {
      const json = await t.api().post('/api/v1/admin/models').set('content-type', 'application/json').send('{"a":').expect(400);
      expect(json.type).toBe('application/problem+json');
      expect(fields(json.body)).toEqual(['(body)']);
      const pathRes = await t.api().get('/api/v1/admin/platform-keys/%E0%A4%A').expect(400);
      expect(fields(pathRes.body)).toEqual(['(path)']);
    });
  });

  describe('litellm_params and model_info are bounded (item 6)', () => {
    const model = (extra: Record<string, unknown>) => ({ model_name: 'bounded', provider: 'openai', model: 'x', ...extra });
    const nest = (depth: number): unknown => {
      let v: unknown = 'leaf';
      for (let i = 0; i < depth; i++) v = { n: v };
      return v;
    };
    it('depth: 16 levels pass, 17 and 5,000 are 400s', async () => {
      await t.api().post('/api/v1/admin/models').send(model({ litellm_params: nest(16) as Record<string, unknown> })).expect(201);
      const deep = await t.api().post('/api/v1/admin/models').send(model({ litellm_params: nest(17) as Record<string, unknown> })).expect(400);
      expect(deep.body.errors[0].rule).toMatch(/at most 16 levels/);
      expect(deep.body.errors[0].field).toMatch(/^litellm_params(\.n)+$/);
      const body = `{"model_name":"m","provider":"openai","model":"x","model_info":${'{"n":'.repeat(5000)}1${'}'.repeat(5000)}}`;
      const huge = await t.api().post('/api/v1/admin/models').set('content-type', 'application/json').send(body).expect(400);
      expect(huge.body.errors[0].field).toMatch(/^model_info(\.n)+$/);
    });
    it('keys, strings, entries and numbers', async () => {
      const cases: Array<[Record<string, unknown>, string, RegExp]> = [
        [{ litellm_params: { ['k'.repeat(129)]: 1 } }, `litellm_params.${'k'.repeat(32)}...`, /longer than 128/],
        [{ model_info: { s: 'x'.repeat(8193) } }, 'model_info.s', /at most 8192 characters/],
        [{ model_info: { a: Array.from({ length: 257 }, () => 1) } }, 'model_info.a', /at most 256 entries/],
        [{ model_info: Object.fromEntries(Array.from({ length: 257 }, (_, i) => [`k${i}`, i])) }, 'model_info', /at most 256 entries/],
      ];
      for (const [extra, field, rule] of cases) {
        const res = await t.api().post('/api/v1/admin/models').send(model(extra)).expect(400);
        expect(res.body.errors).toEqual([{ field, rule: expect.stringMatching(rule) }]);
      }
      await t.api().post('/api/v1/admin/models').send(model({ model_info: { s: 'x'.repeat(8192), ['k'.repeat(128)]: 1 } })).expect(201);
      const inf = await t.api().post('/api/v1/admin/models').set('content-type', 'application/json').send('{"model_name":"m","provider":"openai","model":"x","model_info":{"big":1e400}}').expect(400);
      expect(inf.body.errors).toEqual([{ field: 'model_info.big', rule: 'must be a finite number' }]);
    });
    it('60 KB of litellm_params is refused, naming the limit (the 24 MB list of item 18)', async () => {
      const res = await t.api().post('/api/v1/admin/models').send(model({ litellm_params: { a: 'x'.repeat(7000), b: 'x'.repeat(7000), c: 'x'.repeat(7000) } })).expect(400);
      expect(res.body.errors).toEqual([{ field: 'litellm_params', rule: expect.stringMatching(/at most 16384$/) }]);
    });
    it('routing: at most 1,000 aliases', async () => {
      const aliases = Object.fromEntries(Array.from({ length: 1001 }, (_, i) => [`a${i}`, 'gpt']));
      const res = await t.api().put('/api/v1/admin/routing').send({ aliases }).expect(400);
      expect(res.body.errors).toEqual([{ field: 'aliases', rule: 'must have at most 1000 entries' }]);
    });
  });

  describe('the audit hash covers what is stored (item 17)', () => {
    it('lone surrogates and NUL in actor, target and details (keys too) keep the chain verifiable', async () => {
      await withTransaction(t.db.pool, (c) =>
        appendAudit(c, {
          actor: 'jwt:user\ud800',
          action: 'test.odd',
          target: 'odd/\udfff\u0000',
          requestId: 'r\ud83d',
          details: { note: 'x\udc00y', ['k\ud800']: ['\u0000', { deep: '\ud800\ud800' }], ok: '\ud83d\ude00' },
        }),
      );
      const verify = await t.api().get('/api/v1/admin/audit/verify').expect(200);
      expect(verify.body).toMatchObject({ ok: true });
      const rows = await t.api().get('/api/v1/admin/audit?action=test.odd').expect(200);
      expect(rows.body.items[0]).toMatchObject({ actor: 'jwt:user\ufffd', target: 'odd/\ufffd\ufffd', details: { note: 'x\ufffdy', 'k\ufffd': ['\ufffd', { deep: '\ufffd\ufffd' }], ok: '\ud83d\ude00' } });
    });
  });

  describe('security headers (helmet)', () => {
    const expectHeaders = (res: request.Response): void => {
      expect(res.headers['content-security-policy']).toBe("default-src 'none';frame-ancestors 'none'");
      expect(res.headers['x-content-type-options']).toBe('nosniff');
      expect(res.headers['x-frame-options']).toBe('DENY');
      expect(res.headers['strict-transport-security']).toMatch(/max-age=\d+/);
      expect(res.headers['referrer-policy']).toBe('no-referrer');
      expect(res.headers['cross-origin-resource-policy']).toBe('same-origin');
      expect(res.headers['x-powered-by']).toBeUndefined();
    };
    it('on a 200, a 404, a 400, a 401 and /metrics', async () => {
      expectHeaders(await t.api().get('/api/v1/admin/platform-keys').expect(200));
      expectHeaders(await t.api().get('/api/v1/admin/nothing-here').expect(404));
      expectHeaders(await t.api().get('/api/v1/admin/models?limit=0').expect(400));
      expectHeaders(await request(t.kp.url!).get('/api/v1/admin/models').expect(401));
      expectHeaders(await request(t.kp.url!).get('/metrics').expect(200));
    });
  });

  describe('/metrics labels (item 10)', () => {
    it('2,000 requests to made-up paths, some with bad JSON or a bad content type, leave /metrics as big as before', async () => {
      const agent = new http.Agent({ keepAlive: true, maxSockets: 16 });
      const send = (method: string, path: string, headers: Record<string, string>, body?: string): Promise<number> =>
        new Promise((resolve, reject) => {
          const req = http.request(`${t.kp.url}${path}`, { method, headers, agent }, (res) => {
            res.resume();
            res.on('end', () => resolve(res.statusCode ?? 0));
          });
          req.on('error', reject);
          req.end(body);
        });
      const kinds = [
        (i: number) => send('GET', `/made-up/${i}/x${i}`, {}),
        (i: number) => send('POST', `/api/v1/admin/nope-${i}`, { 'content-type': 'application/json' }, '{"bad json'),
        (i: number) => send('PUT', `/n${i}?q=${i}`, { 'content-type': 'text/plain' }, 'hello'),
        (i: number) => send('DELETE', `/api/v1/admin/platform-keys/${i}/deep/${i}`, { authorization: 'Bearer junk' }),
      ];
      // One of each first: a label set's first request adds its series; after that only counts change.
      const firstStatuses = await Promise.all(kinds.map((k) => k(-1)));
      expect(firstStatuses).toEqual([404, 400, 415, 404]);
      const size = async () => (await request(t.kp.url!).get('/metrics').expect(200)).text.length;
      const before = await size();
      for (let i = 0; i < 2000; i += 50) {
        const statuses = await Promise.all(Array.from({ length: 50 }, (_, j) => kinds[(i + j) % kinds.length]!(i + j)));
        expect(statuses.every((s) => s === 404 || s === 400 || s === 415)).toBe(true);
      }
      agent.destroy();
      const after = await size();
      // Counter values grow by a few digits; a label per path would add ~1 KB per request.
      expect(after - before).toBeLessThan(2048);
      expect((await request(t.kp.url!).get('/metrics').expect(200)).text).not.toMatch(/made-up|nope-|route="\/n\d/);
    }, 60_000);
  });
});
