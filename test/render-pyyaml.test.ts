import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import { isSecretParam } from '../src/secret-params';
import { loadDesiredState } from '../src/sync/desired-state';
import { render } from '../src/sync/renderer';
import { MODEL_JSON_BOUNDS, MODEL_PARAMS_BYTES } from '../src/features/models/models-routes';
import { startTestApp, type TestApp } from './helpers/app';
import { loadWithPyYaml, requirePyYaml } from './helpers/pyyaml';

/**
 * Issue 8 item 6: whatever the models API accepts renders, and the rendered config.yaml loads in
 * LiteLLM's own loader (PyYAML's safe_load) as exactly the data that was sent.
 */

const MANAGED = new Set(['model', 'api_key', 'api_base', 'rpm', 'tpm']);
// Strings YAML resolvers like to turn into something else, and characters the emitter must escape.
const TRICKY = ['yes', 'No', 'ON', 'null', 'Null', '~', '', ' ', '-', '- x', '? x', ': x', 'a: b', 'a:b', 'a #b', '#x', '<<', '=', '.inf', '.NaN', '0x10', '0o17', '1_000', '1e5', '1.0', '+1', '12:30:00',
  '2001-12-14', 'y', 'n', '&a', '*a', '!tag', '%x', '@x', '`x', '|', '>', '"', "'", '\\', '{}', '[]', 'a\nb', '\t', '\r', '\u0085', '\u00a0', '\u2028', '\u2029', '\ufeff', '\ufffe', '\uffff', '\u007f',
  '\u0001', '\u001b[31m', '\ud83d\ude00', 'os.environ', '___', '__proto', 'constructor'];

const text = (max: number) =>
  fc.oneof(
    { weight: 3, arbitrary: fc.string({ maxLength: max }) },
    { weight: 2, arbitrary: fc.string({ unit: 'binary', maxLength: max }) },
    { weight: 2, arbitrary: fc.constantFrom(...TRICKY) },
  ).filter((s) => !s.includes('\u0000'));

const key = text(MODEL_JSON_BOUNDS.keyLength).filter((k) => k !== '__proto__' && k.length <= MODEL_JSON_BOUNDS.keyLength && !isSecretParam(k, 'x'));

const value = fc.letrec((tie) => ({
  json: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    text(300),
    fc.double({ noNaN: true, noDefaultInfinity: true }),
    fc.integer(),
    fc.boolean(),
    fc.constant(null),
    fc.array(tie('json'), { maxLength: 5 }),
    fc.dictionary(key, tie('json'), { maxKeys: 5 }),
  ),
})).json;

const params = fc.dictionary(key, value, { maxKeys: 6 });

const printable = fc.oneof(
  fc.stringMatching(/^[\x21-\x7e]{1,40}$/),
  fc.constantFrom('yes', 'null', '~', '-', '?', '1e5', '0x1', '<<', '=', '*a', '&a', '!x', '%x', '@x', '`x', '|', '>', '#', 'a:', '"', "'"),
);

const deployment = fc.record({
  model_name: printable,
  model: printable,
  rpm: fc.option(fc.integer({ min: 1, max: 100_000_000 }), { nil: undefined }),
  // Refused at the API (see modelBody): managed names, and names JavaScript objects inherit.
  litellm_params: params.map((p) => Object.fromEntries(Object.entries(p).filter(([k]) => !MANAGED.has(k) && !(k in Object.prototype)))),
  model_info: params,
});

type Deployment = { model_name: string; model: string; rpm?: number; litellm_params: Record<string, unknown>; model_info: Record<string, unknown> };

const jsonBytes = (d: Deployment): number => Buffer.byteLength(JSON.stringify(d.litellm_params)) + Buffer.byteLength(JSON.stringify(d.model_info));

describe('config.yaml loads in PyYAML as the data the API accepted', () => {
  let t: TestApp;
  let dir: string;
  let n = 0;
  beforeAll(async () => {
    requirePyYaml();
    t = await startTestApp();
    dir = mkdtempSync(path.join(os.tmpdir(), 'kp-pyyaml-'));
    await t.api().put('/api/v1/admin/platform-keys/openai').send({ api_key: 'sk-pyyaml-test-aaaaaaaaaaaa' }).expect(200);
    await t.db.pool.query(`INSERT INTO key_destinations (key_name, destination, approved_by) VALUES ('openai', 'https://api.openai.com', 'test') ON CONFLICT DO NOTHING`);
  });
  afterAll(async () => {
    await t.close();
    rmSync(dir, { recursive: true, force: true });
  });

  /** Creates `deployments` through the API (all must be accepted), renders, loads with PyYAML, compares. */
  async function roundTrip(deployments: Deployment[]): Promise<void> {
    await t.db.pool.query('DELETE FROM models');
    const sent = deployments.map((d, i) => ({ ...d, model: `${i}-${d.model}` }));
    for (const d of sent) {
      const res = await t.api().post('/api/v1/admin/models').send({ ...d, provider: 'openai' });
      if (res.status !== 201) throw new Error(`POST /models answered ${res.status}: ${JSON.stringify(res.body.errors ?? res.body)}`);
    }
    const rendered = render(await loadDesiredState(t.kp.pool, t.kp.platformKeys), {}, { modelsInConfig: true });
    expect(rendered.skipped).toEqual([]);
    const file = path.join(dir, `config-${n++}.yaml`);
    writeFileSync(file, rendered.configYaml);
    const loaded = loadWithPyYaml(file) as { model_list: Array<{ model_name: string; litellm_params: Record<string, unknown>; model_info?: Record<string, unknown> }> };
    expect(loaded.model_list).toHaveLength(sent.length);
    const json = <T>(v: T): T => JSON.parse(JSON.stringify(v)) as T;
    for (const d of sent) {
      const entry = loaded.model_list.find((e) => e.litellm_params.model === `openai/${d.model}`);
      expect(entry).toBeDefined();
      const { model: _m, api_key, rpm, ...rest } = entry!.litellm_params;
      expect(entry!.model_name).toBe(d.model_name);
      expect(api_key).toBe('os.environ/OPENAI_API_KEY');
      expect(rpm).toEqual(d.rpm);
      expect(rest).toEqual(json(d.litellm_params));
      expect(entry!.model_info ?? {}).toEqual(json(d.model_info));
    }
  }

  it('random deployments within the bounds', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(deployment, { minLength: 1, maxLength: 4 }).filter((ds) => ds.every((d) => jsonBytes(d) <= MODEL_PARAMS_BYTES)),
        (ds) => roundTrip(ds),
      ),
      { numRuns: 40 },
    );
  }, 120_000);

  it('deployments at the bounds: deepest nesting, longest keys of characters that must be escaped, most entries, longest strings', async () => {
    const b = MODEL_JSON_BOUNDS;
    let deep: unknown = '\u0001'.repeat(40);
    for (let i = 1; i < b.depth; i++) deep = { ['\u0001\u2028"\\'.repeat(b.keyLength / 4)]: deep };
    const wide = Object.fromEntries(Array.from({ length: b.entries }, (_, i) => [`k${i}`, i % 2 ? [i, -0.5, 1e300] : 'yes']));
    await roundTrip([
      { model_name: 'deep', model: 'x', litellm_params: { deep }, model_info: {} },
      { model_name: 'wide', model: 'x', litellm_params: {}, model_info: wide },
      { model_name: 'long', model: 'x', litellm_params: { s: 'a: b #c\n'.repeat(b.stringLength / 8) }, model_info: { a: Array.from({ length: b.entries }, () => null) } },
    ]);
  }, 60_000);
});
