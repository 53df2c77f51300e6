import http from 'node:http';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import fc from 'fast-check';
import { TokensStore } from '../src/features/tokens/tokens-store';
import { startTestApp, type TestApp } from './helpers/app';
import { parseSystemdEnvFile, readWithShell } from './helpers/env-readers';
import { loadWithPyYaml, requirePyYaml } from './helpers/pyyaml';

/**
 * Issue 8's proof for the admin API: random paths (from the route table and made up), methods,
 * headers, query strings and JSON bodies (NUL, lone surrogates, deep nesting, strings near the
 * 64 KiB limit). Never a 5xx; every 4xx is problem+json; every 400 names a field; and afterwards
 * nothing partial is stored, the audit chain verifies and the rendered files load.
 *
 * Nothing here may reach past 127.0.0.1: the health check route is not called, `validate` is never
 * true, and every api_base generated points at 127.0.0.1.
 */

interface Sent {
  method: string;
  path: string;
  headers: Record<string, string>;
  body?: string | Buffer;
}

interface Received {
  status: number;
  type: string;
  text: string;
}

const ODD = ['\u0000', 'a\u0000b', '\ud800', 'x\udfff', '\udbff\udc00', '\u202e', '\ufeff', '\u2028', '\n', ' ', '', '"', '\\', '__proto__', 'constructor', 'os.environ/X', '../..', '%00', '💥'];

const oddString = fc.oneof(
  { weight: 4, arbitrary: fc.string({ maxLength: 40 }) },
  { weight: 2, arbitrary: fc.string({ unit: 'binary', maxLength: 40 }) },
  { weight: 2, arbitrary: fc.constantFrom(...ODD) },
  { weight: 1, arbitrary: fc.string({ unit: fc.constantFrom('\u0000', '\ud800', '\udc00', 'a', '\u00e9'), maxLength: 20 }) },
);

const json = fc.letrec((tie) => ({
  v: fc.oneof(
    { depthSize: 'small' },
    oddString,
    fc.integer(),
    fc.double(),
    fc.boolean(),
    fc.constant(null),
    fc.array(tie('v'), { maxLength: 4 }),
    fc.dictionary(oddString, tie('v'), { maxKeys: 4 }),
  ),
})).v;

const KEY_OK = fc.stringMatching(/^sk-[A-Za-z0-9_.+/=:@,-]{8,40}$/);
// Odd strings are mostly refused; the ones accepted are stored secrets, so they carry a distinctive
// prefix: the suite's secret scan must not find them in a random path a 404 echoes back.
const apiKey = fc.oneof(KEY_OK, KEY_OK, KEY_OK, oddString.map((s) => `sk-fuzz-${s}`), fc.constantFrom('sk-aaaa;id>/tmp/x', 'sk-aaaa(bbbb', 'os.environ/OPENAI_API_KEY', 'x'.repeat(5000)));
const envVar = fc.oneof(fc.stringMatching(/^FUZZ_[A-Z0-9_]{1,20}_KEY$/), fc.stringMatching(/^FUZZ_[A-Z0-9_]{1,20}_KEY$/), fc.constantFrom('DATABASE_URL', 'LD_PRELOAD', 'LITELLM_MASTER_KEY', 'lower', ''), oddString);
const timestamp = fc.oneof(
  fc.date({ min: new Date('1970-01-01T00:00:00Z'), max: new Date('9999-12-31T00:00:00Z'), noInvalidDate: true }).map((d) => d.toISOString()),
  fc.constantFrom('2024-02-30', '0000-01-01T00:00:00Z', '2024-02-29', '2024-01-01T10:00:00', '+010000-01-01T00:00:00Z', '-000001-01-01T00:00:00Z', '2024-13-01'),
  oddString,
);
const localUrl = fc.oneof(
  { weight: 3, arbitrary: fc.tuple(fc.integer({ min: 1, max: 65535 }), fc.stringMatching(/^[a-z0-9/]{0,20}$/)).map(([port, p]) => `http://127.0.0.1:${port}/${p}`) },
  fc.constantFrom('http://127.0.0.1:9/v1\n', ' http://127.0.0.1:9', 'http://127.0.0.1:9/\u202e', 'http://0x7f.1/', 'http://user:pw@127.0.0.1/', 'http:\\\\127.0.0.1'),
);
/** Mostly a valid value, sometimes anything: requests must get past the first check to test what lies behind it. */
const mostly = <T>(valid: fc.Arbitrary<T>) => fc.oneof({ weight: 4, arbitrary: valid }, { weight: 1, arbitrary: oddString });
const slugLike = mostly(fc.stringMatching(/^[a-z][a-z0-9_-]{0,12}$/));
const label = mostly(fc.stringMatching(/^[a-z0-9][a-z0-9._-]{0,15}$/));
const maybe = <T>(a: fc.Arbitrary<T>) => fc.option(a, { nil: undefined });
const withExtra = (a: fc.Arbitrary<Record<string, unknown>>) => fc.tuple(a, fc.option(fc.dictionary(oddString, json, { maxKeys: 2 }), { nil: undefined })).map(([b, x]) => ({ ...x, ...b }));

/** Bodies close to what each route takes, so that requests reach past the first check. */
const shaped: Record<string, fc.Arbitrary<unknown>> = {
  'put /api/v1/admin/platform-keys/:name': withExtra(fc.record({ api_key: apiKey, env_var: maybe(envVar), expires_at: maybe(fc.oneof(timestamp, fc.constant(null))), validate: maybe(fc.constant(false)) }, { requiredKeys: [] })),
  'post /api/v1/admin/platform-keys/:name/rollback': fc.record({ version: fc.oneof(fc.integer({ min: -1, max: 5 }), fc.double(), oddString) }),
  'put /api/v1/admin/providers/:slug': withExtra(fc.record({ kind: fc.oneof(fc.constantFrom('openai', 'groq', 'openrouter'), oddString), api_base: maybe(fc.oneof(localUrl, fc.constant(null))), key_name: maybe(slugLike), active: maybe(fc.boolean()) }, { requiredKeys: ['kind'] })),
  'post /api/v1/admin/models': withExtra(
    fc.record(
      {
        model_name: label,
        provider: fc.oneof(fc.constantFrom('openai', 'groq', 'fuzzprov'), slugLike),
        model: label,
        api_base: maybe(fc.oneof(localUrl, fc.constant(null))),
        rpm: maybe(fc.oneof(fc.integer(), fc.constant(null))),
        litellm_params: maybe(fc.oneof(fc.dictionary(oddString, json, { maxKeys: 4 }), json)),
        model_info: maybe(fc.dictionary(oddString, json, { maxKeys: 4 })),
      },
      { requiredKeys: ['model_name', 'provider', 'model'] },
    ),
  ),
  'put /api/v1/admin/routing': fc.record({ aliases: maybe(fc.dictionary(label, label, { maxKeys: 4 })), fallbacks: maybe(fc.dictionary(label, fc.array(label, { maxLength: 3 }), { maxKeys: 3 })) }),
  'post /api/v1/admin/tokens': fc.record({ name: label, role: mostly(fc.constantFrom('admin', 'operator', 'viewer')) }),
  'post /api/v1/llm/byok/keys': fc.record({ provider: slugLike, api_key: apiKey }),
  'post /api/v1/admin/sync': fc.record({ force_reload: maybe(fc.oneof(fc.boolean(), oddString)) }),
};
shaped['put /api/v1/admin/models/:id'] = shaped['post /api/v1/admin/models']!;

/** Bodies no route expects: odd JSON, deep nesting, strings near (and past) the 64 KiB limit, bytes that are not UTF-8. */
const wildBody: fc.Arbitrary<string | Buffer> = fc.oneof(
  json.map((v) => JSON.stringify(v) ?? 'null'),
  fc.integer({ min: 1, max: 30_000 }).map((n) => `${'['.repeat(n)}${']'.repeat(n)}`),
  fc.integer({ min: 1, max: 10_000 }).map((n) => `{"litellm_params":${'{"a":'.repeat(n)}1${'}'.repeat(n)}}`),
  fc.integer({ min: 60_000, max: 70_000 }).map((n) => JSON.stringify({ api_key: 'x'.repeat(n) })),
  fc.integer({ min: 60_000, max: 65_400 }).map((n) => JSON.stringify({ model_name: 'm', provider: 'openai', model: 'x', model_info: { s: 'y'.repeat(n) } })),
  fc.constantFrom('{"a":', '\u0000', '{"a":"\\ud800"}', '{"a":"\\u0000"}', '{"__proto__":{"x":1}}', 'null', '"str"', '1e400', '[]'),
  fc.uint8Array({ maxLength: 64 }).map((a) => Buffer.from(a)),
);

const CONTENT_TYPES = ['application/json', 'application/json', 'application/json', 'application/json', 'application/json', 'application/json', 'application/problem+json', 'application/json; charset=utf-8', 'application/json; charset=latin1', 'application/json; charset=utf-16', 'text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', ''];

describe('admin API under random input', () => {
  let t: TestApp;
  const tokens: Record<string, string> = {};
  const routes: Array<{ method: string; path: string }> = [];
  const values: Record<string, string[]> = { name: ['openai', 'fuzzkey', 'groq'], slug: ['openai', 'groq', 'fuzzprov'], id: [], provider: ['openai', 'groq'] };
  const seen = new Map<number, number>();

  beforeAll(async () => {
    requirePyYaml();
    t = await startTestApp({ env: { KEYPLANE_AUTH_MAX_FAILURES: '10000' } });
    const store = new TokensStore(t.db.pool);
    tokens.admin = t.adminToken;
    tokens.operator = (await store.create('fuzz-operator', 'operator', 'test')).token;
    tokens.viewer = (await store.create('fuzz-viewer', 'viewer', 'test')).token;
    for (const k of ['openai', 'fuzzkey', 'groq']) await t.api().put(`/api/v1/admin/platform-keys/${k}`).send({ api_key: `sk-fuzz-seed-${k}-aaaaaaaa` }).expect(200);
    await t.api().put('/api/v1/admin/providers/fuzzprov').send({ kind: 'openai', api_base: 'http://127.0.0.1:9/v1', key_name: 'fuzzkey' }).expect(201);
    // Providers the seed points at real hosts: nothing in this test may make keyplane call them.
    await t.db.pool.query(`UPDATE providers SET api_base = 'http://127.0.0.1:9/' || slug`);
    const model = await t.api().post('/api/v1/admin/models').send({ model_name: 'seed', provider: 'openai', model: 'gpt-x' }).expect(201);
    values.id!.push(model.body.id, '00000000-0000-4000-8000-000000000000');
    const doc = await t.api().get('/api/v1/openapi.json').expect(200);
    for (const [p, ops] of Object.entries(doc.body.paths as Record<string, Record<string, unknown>>)) {
      for (const method of Object.keys(ops)) {
        const express = p.replace(/\{([A-Za-z_]+)\}/g, ':$1');
        // The health check probes providers: it would call out of this machine.
        if (express === '/api/v1/admin/llm/health/check') continue;
        // The live event stream never ends by itself; test/ui-server.test.ts and the auth matrix cover it.
        if (express === '/api/v1/admin/events') continue;
        routes.push({ method, path: express });
      }
    }
    expect(routes.length).toBeGreaterThan(25);
  });
  afterAll(async () => {
    await t?.close();
  });

  function send(r: Sent): Promise<Received> {
    return new Promise((resolve, reject) => {
      const req = http.request(`${t.kp.url}${r.path}`, { method: r.method, headers: r.headers }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, type: String(res.headers['content-type'] ?? ''), text: Buffer.concat(chunks).toString('utf8') }));
      });
      req.on('error', reject);
      req.end(r.body);
    });
  }

  const segment = (pool: string[]) =>
    fc.oneof(
      { weight: 3, arbitrary: fc.constantFrom(...pool) },
      { weight: 2, arbitrary: oddString.map((s) => encodeURIComponent(s.replace(/[\ud800-\udfff]/g, 'x'))) },
      { weight: 1, arbitrary: fc.constantFrom('%00', '%E0%A4%A', '%ZZ', '..', '%2F', 'x'.repeat(300), 'health', '%ED%A0%80') },
    );

  function request(): fc.Arbitrary<Sent> {
    // Routes that take a body are drawn more often: they are where partial writes could happen.
    const writes = routes.filter((r) => shaped[`${r.method} ${r.path}`]);
    const fromTable = fc.oneof(fc.constantFrom(...routes), fc.constantFrom(...writes)).chain((r) => {
      const names = [...r.path.matchAll(/:([A-Za-z_]+)/g)].map((m) => m[1]!);
      return fc.tuple(fc.constant(r), fc.tuple(...names.map((n) => segment(values[n] ?? ['x']))), fc.boolean(), fc.boolean()).map(([route, segs, same1, same2]) => {
        const sameMethod = same1 || same2;
        let i = 0;
        const p = route.path.replace(/:([A-Za-z_]+)/g, () => segs[i++]!);
        return { template: `${route.method} ${route.path}`, method: sameMethod ? route.method : '', path: p };
      });
    });
    const madeUp = fc
      .tuple(fc.constantFrom('', 'api/v1/admin/', 'api/v1/'), fc.array(oddString.map((s) => encodeURIComponent(s.replace(/[\ud800-\udfff]/g, 'y'))), { minLength: 1, maxLength: 5 }))
      .map(([prefix, segs]) => ({ template: '', method: '', path: `/${prefix}${segs.join('/')}` }));
    const query = fc.oneof({ weight: 2, arbitrary: fc.constant([] as Array<[string, string]>) }, { weight: 1, arbitrary: fc.array(
      fc.tuple(fc.oneof(fc.constantFrom('limit', 'cursor', 'provider', 'model_name', 'before', 'target', 'action'), oddString), fc.oneof(fc.constantFrom('1', '0', '1000', '1001', '-1', '0x10', '1e2', 'abc', 'eyJ4Ijox', '%00', '%ZZ'), oddString)),
      { minLength: 1, maxLength: 3 },
    ) });
    return fc
      .record({
        target: fc.oneof({ weight: 5, arbitrary: fromTable }, { weight: 1, arbitrary: madeUp }),
        method: fc.constantFrom('GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'HEAD', 'OPTIONS'),
        auth: fc.constantFrom('admin', 'admin', 'operator', 'operator', 'viewer', 'junk', 'none', 'basic'),
        contentType: fc.constantFrom(...CONTENT_TYPES),
        query,
        rawQuery: fc.boolean(),
        wild: fc.integer({ min: 0, max: 3 }),
        wildBody,
        ifMatch: fc.oneof(
          { weight: 6, arbitrary: fc.constant(undefined) },
          { weight: 1, arbitrary: fc.oneof(fc.constantFrom('"1"', '"2"', '*', 'W/"3"', 'junk'), oddString.map((s) => s.replace(/[^\x20-\x7e]/g, ''))) },
        ),
      })
      .chain((g) => {
        const shapedBody = shaped[g.target.template];
        return fc.tuple(fc.constant(g), shapedBody ? shapedBody : fc.constant(undefined));
      })
      .map(([g, shapedBody]) => {
        const method = g.target.method ? g.target.method.toUpperCase() : g.method;
        const headers: Record<string, string> = {};
        if (g.auth === 'junk') headers.authorization = 'Bearer kp_junk';
        else if (g.auth === 'basic') headers.authorization = 'Basic YTpi';
        else if (g.auth !== 'none') headers.authorization = `Bearer ${tokens[g.auth]}`;
        if (g.ifMatch !== undefined) headers['if-match'] = g.ifMatch;
        const qs = g.query
          .map(([k, v]) => (g.rawQuery && /^[\x21-\x7e]*$/.test(k + v) && !/[#&]/.test(k + v) ? `${k}=${v}` : `${encodeURIComponent(k.replace(/[\ud800-\udfff]/g, 'z'))}=${encodeURIComponent(v.replace(/[\ud800-\udfff]/g, 'z'))}`))
          .join('&');
        let body: string | Buffer | undefined;
        if (method !== 'GET' && method !== 'HEAD' && method !== 'OPTIONS') body = shapedBody !== undefined && g.wild > 0 ? JSON.stringify(shapedBody) : g.wildBody;
        if (body !== undefined && g.contentType) headers['content-type'] = g.contentType;
        // Node sends a DELETE's body without framing unless told its length: that is broken HTTP, not an API request.
        if (body !== undefined) headers['content-length'] = String(Buffer.byteLength(body));
        return { method, path: `${g.target.path}${qs ? `?${qs}` : ''}`, headers, body };
      });
  }

  it('never answers 5xx; 4xx are problem+json, and every 400 names a field', async () => {
    const started = Date.now();
    await fc.assert(
      fc.asyncProperty(request(), async (r) => {
        const res = await send(r);
        seen.set(res.status, (seen.get(res.status) ?? 0) + 1);
        const what = `${r.method} ${r.path.slice(0, 200)} -> ${res.status} ${res.text.slice(0, 300)}`;
        if (res.status >= 500) throw new Error(`5xx: ${what}`);
        if (res.status >= 400) {
          if (!res.type.startsWith('application/problem+json')) throw new Error(`not problem+json: ${what}`);
          if (r.method !== 'HEAD') {
            const body = JSON.parse(res.text) as { status: number; type: string; title: string; detail: string; errors?: Array<{ field: unknown; rule: unknown }> };
            expect(body.status).toBe(res.status);
            expect(typeof body.type === 'string' && typeof body.title === 'string' && typeof body.detail === 'string').toBe(true);
            if (res.status === 400 && !(body.errors && body.errors.length > 0 && body.errors.every((e) => typeof e.field === 'string' && e.field !== '' && typeof e.rule === 'string'))) {
              throw new Error(`400 without errors naming a field: ${what}`);
            }
          }
        }
      }),
      { numRuns: Number(process.env.FUZZ_RUNS ?? 600), seed: process.env.FUZZ_SEED ? Number(process.env.FUZZ_SEED) : undefined },
    );
    // The run reached handlers, not only the first checks.
    expect(seen.get(200) ?? 0).toBeGreaterThan(20);
    expect(seen.get(400) ?? 0).toBeGreaterThan(50);
    if (!process.env.FUZZ_RUNS) expect(Date.now() - started).toBeLessThan(60_000);
    if (process.env.FUZZ_RUNS) console.log(Object.fromEntries(seen));
  }, 120_000);

  it('afterwards nothing partial is stored, the audit chain verifies, and the files render and load', async () => {
    const orphans = await t.db.pool.query(
      `SELECT k.name FROM platform_keys k
       WHERE NOT EXISTS (SELECT 1 FROM platform_key_versions v WHERE v.name = k.name AND v.version = k.current_version)
          OR k.current_version <> (SELECT max(version) FROM platform_key_versions v WHERE v.name = k.name)`,
    );
    expect(orphans.rows).toEqual([]);
    expect((await t.api().get('/api/v1/admin/audit/verify').expect(200)).body).toMatchObject({ ok: true });
    await t.api().put('/api/v1/admin/platform-keys/final').send({ api_key: 'sk-fuzz-final-aaaaaaaa', env_var: 'FUZZ_FINAL_API_KEY' }).expect(200);
    const sync = await t.api().post('/api/v1/admin/sync').send({}).expect(200);
    expect(['changed', 'unchanged']).toContain(sync.body.status);
    const dir = t.settings.outputDir;
    expect(existsSync(path.join(dir, 'config.yaml'))).toBe(true);
    expect(loadWithPyYaml(path.join(dir, 'config.yaml'))).toEqual(expect.any(Object));
    const envText = readFileSync(path.join(dir, 'litellm.env'), 'utf8');
    const systemd = parseSystemdEnvFile(envText);
    expect(systemd.FUZZ_FINAL_API_KEY).toBe('sk-fuzz-final-aaaaaaaa');
    expect(readWithShell('/bin/sh', path.join(dir, 'litellm.env'), Object.keys(systemd))).toEqual(systemd);
  }, 60_000);
});
