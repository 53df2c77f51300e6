import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import { BaseConfigError, loadBaseConfig, parseBaseConfig } from '../src/sync/base-config';
import type { DesiredState } from '../src/sync/desired-state';
import { lineDiff } from '../src/sync/diff';
import { maskConfigText, maskEnvText } from '../src/sync/masking';
import { render } from '../src/sync/renderer';
import { isKeyChar } from '../src/key-rules';
import { emitYaml } from '../src/sync/yaml-emitter';

const FIXTURES = path.join(__dirname, 'fixtures', 'sync');
const fixture = (name: string): string => readFileSync(path.join(FIXTURES, name), 'utf8');
const state = (): DesiredState => JSON.parse(fixture('state.json')) as DesiredState;
const base = () => parseBaseConfig(fixture('base.yaml'), 'base.yaml');

/** systemd's EnvironmentFile= rules: comments (# ;), whitespace trimmed, quotes stripped, backslash escapes. */
function parseSystemdEnv(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#') || line.startsWith(';')) continue;
    const at = line.indexOf('=');
    const key = line.slice(0, at).trim();
    let value = line.slice(at + 1).trim();
    if ((value.startsWith('"') && value.endsWith('"')) || (value.startsWith("'") && value.endsWith("'"))) value = value.slice(1, -1);
    else value = value.replace(/\\(.)/g, '$1');
    out[key] = value;
  }
  return out;
}

/** docker's --env-file rules: `#` comments, everything after the first `=` taken verbatim. */
function parseDockerEnv(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const at = line.indexOf('=');
    out[line.slice(0, at)] = line.slice(at + 1);
  }
  return out;
}

describe('renderer', () => {
  it('renders a fixed state to the golden files, byte for byte', () => {
    const r = render(state(), base(), { modelsInConfig: true });
    if (process.env.UPDATE_GOLDEN === '1') {
      writeFileSync(path.join(FIXTURES, 'golden.config.yaml'), r.configYaml);
      writeFileSync(path.join(FIXTURES, 'golden.litellm.env'), r.envFile);
    }
    expect(r.configYaml).toBe(fixture('golden.config.yaml'));
    expect(r.envFile).toBe(fixture('golden.litellm.env'));
    expect(r.configSha256).toMatch(/^[0-9a-f]{64}$/);
  });

  it('gives the same bytes for the same state in any order', () => {
    const a = render(state(), base(), { modelsInConfig: true });
    const s = state();
    s.keys.reverse();
    s.providers.reverse();
    s.models.reverse();
    for (const m of s.models) m.litellmParams = Object.fromEntries(Object.entries(m.litellmParams).reverse());
    s.routing.aliases = Object.fromEntries(Object.entries(s.routing.aliases).reverse());
    const b = render(s, base(), { modelsInConfig: true });
    expect(b.configYaml).toBe(a.configYaml);
    expect(b.envFile).toBe(a.envFile);
  });

  it('writes every secret only as os.environ/<VAR>, each defined in the env file', () => {
    const s = state();
    const r = render(s, base(), { modelsInConfig: true });
    for (const k of s.keys) expect(r.configYaml).not.toContain(k.value);
    expect(r.configYaml).not.toContain('sk-never-rendered');
    expect(r.configYaml).not.toContain('literal-never-rendered');
    expect(r.configYaml).not.toContain('sk-nested-never-rendered');
    const doc = YAML.parse(r.configYaml);
    const refs = [doc.general_settings.master_key, ...doc.model_list.map((m: { litellm_params: { api_key?: string } }) => m.litellm_params.api_key)].filter(Boolean);
    expect(refs.length).toBeGreaterThan(3);
    for (const ref of refs) {
      expect(ref).toMatch(/^os\.environ\/[A-Z_]+$/);
      expect(r.env[ref.slice('os.environ/'.length)]).toBeDefined();
    }
    expect(r.warnings).toEqual(
      expect.arrayContaining([
        { kind: 'secret_param_dropped', model_id: '00000000-0000-4000-8000-000000000001', param: 'api_key' },
        { kind: 'secret_param_dropped', model_id: '00000000-0000-4000-8000-000000000003', param: 'aws_secret_access_key' },
        { kind: 'secret_param_dropped', model_id: '00000000-0000-4000-8000-000000000002', param: 'extra_headers.Authorization' },
      ]),
    );
  });

  it('drops a literal secret from model_info too (rows written around the API)', () => {
    const s = state();
    const m = s.models.find((x) => x.id === '00000000-0000-4000-8000-000000000001')!;
    m.modelInfo = { tier: 'gold', nested: { client_secret: 'info-secret-never-rendered' } };
    const r = render(s, base(), { modelsInConfig: true });
    expect(r.configYaml).not.toContain('info-secret-never-rendered');
    expect(r.configYaml).toContain('tier: gold');
    expect(r.warnings).toContainEqual({ kind: 'secret_param_dropped', model_id: m.id, param: 'model_info.nested.client_secret' });
  });

  it('renders api_base only where it differs from the kind default; the model wins over the provider', () => {
    const doc = YAML.parse(render(state(), base(), { modelsInConfig: true }).configYaml);
    const byModel = (model: string) => doc.model_list.find((m: { litellm_params: { model: string } }) => m.litellm_params.model === model)?.litellm_params;
    expect(byModel('openai/gpt-4o').api_base).toBeUndefined();
    expect(byModel('groq/llama-3.1-70b-versatile').api_base).toBeUndefined();
    expect(byModel('openai/gpt-4o-mini').api_base).toBe('https://llm.corp.example/v1');
    expect(byModel('openai/o1').api_base).toBe('https://eu.api.openai.com/v1');

    const s = state();
    s.keys.push({ name: 'gemini', envVar: 'GEMINI_API_KEY', version: 1, value: 'AIzaSyGGGGGGGGGGGGGGGG7777', fingerprint: 'f', expiresAt: null });
    const r = render(s, base(), { modelsInConfig: true });
    const gemini = YAML.parse(r.configYaml).model_list.find((m: { model_name: string }) => m.model_name === 'gemini-flash');
    expect(gemini.litellm_params).toEqual({ model: 'gemini/gemini-1.5-flash', api_key: 'os.environ/GEMINI_API_KEY' });
    expect(r.configYaml).not.toContain('generativelanguage.googleapis.com');
  });

  it('leaves out deployments of a disabled provider or one without a key, and reports them', () => {
    const r = render(state(), base(), { modelsInConfig: true });
    expect(r.skipped).toEqual([
      { id: '00000000-0000-4000-8000-000000000006', model_name: 'claude-3-5-sonnet', provider: 'anthropic', reason: 'provider_disabled' },
      { id: '00000000-0000-4000-8000-000000000004', model_name: 'gemini-flash', provider: 'gemini', reason: 'no_key' },
    ]);
    expect(r.configYaml).not.toContain('claude-3-5-sonnet-20241022');
    expect(r.deployments).toBe(5);
  });

  it('keeps the base config: its settings, its own model entries, YAML merge keys resolved', () => {
    const doc = YAML.parse(render(state(), base(), { modelsInConfig: true }).configYaml);
    expect(doc.model_list[0]).toEqual({ model_name: 'local-llama', litellm_params: { model: 'ollama/llama3.1', api_base: 'http://127.0.0.1:11434' } });
    expect(doc.router_settings).toEqual({ routing_strategy: 'simple-shuffle', model_group_alias: { legacy: 'local-llama', balanced: 'gpt-4o-mini', smart: 'o1' } });
    expect(doc.litellm_settings.drop_params).toBe(true);
    expect(doc.litellm_settings.fallbacks).toEqual([{ 'local-llama': ['gpt-4o-mini'] }, { 'gpt-4o': ['gpt-4o-mini', 'o1'] }, { o1: ['gpt-4o'] }]);
    expect(doc.general_settings).toEqual({ store_model_in_db: false, alerting: ['slack'], master_key: 'os.environ/LITELLM_MASTER_KEY' });
    expect(doc.router_extra).toEqual({ num_retries: 2, timeout: 30 });
  });

  it('with modelsInConfig false keeps only base settings, base models and the master key reference', () => {
    const r = render(state(), base(), { modelsInConfig: false });
    const doc = YAML.parse(r.configYaml);
    expect(doc.model_list).toEqual([{ model_name: 'local-llama', litellm_params: { model: 'ollama/llama3.1', api_base: 'http://127.0.0.1:11434' } }]);
    expect(doc.general_settings.master_key).toBe('os.environ/LITELLM_MASTER_KEY');
    expect(r.configYaml).not.toContain('OPENAI_API_KEY');
    expect(r.env.OPENAI_API_KEY).toBe('sk-proj-aaaaaaaaaaaaaaaaaaaa1111');
    const bare = YAML.parse(render({ ...state(), keys: [] }, {}, { modelsInConfig: false }).configYaml);
    expect(bare.model_list).toBeUndefined();
    expect(bare.general_settings).toBeUndefined();
  });

  it('without a master key leaves general_settings.master_key as the base has it', () => {
    const s = state();
    s.keys = s.keys.filter((k) => k.name !== 'litellm_master_key');
    expect(YAML.parse(render(s, base(), { modelsInConfig: true }).configYaml).general_settings.master_key).toBeUndefined();
    const own = parseBaseConfig('general_settings:\n  master_key: os.environ/MY_OWN_MASTER\n', 'b.yaml');
    expect(YAML.parse(render(s, own, { modelsInConfig: true }).configYaml).general_settings.master_key).toBe('os.environ/MY_OWN_MASTER');
  });

  it('never writes a value that would break the env file; its deployments count as keyless', () => {
    const s = state();
    s.keys.find((k) => k.name === 'corp-gateway')!.value = 'has space\nINJECTED=1';
    const r = render(s, base(), { modelsInConfig: true });
    expect(r.envFile).not.toContain('INJECTED');
    expect(r.env.CORP_GATEWAY_API_KEY).toBeUndefined();
    expect(r.warnings).toContainEqual({ kind: 'unsafe_env_value', key: 'corp-gateway', env_var: 'CORP_GATEWAY_API_KEY' });
    expect(r.skipped).toContainEqual(expect.objectContaining({ model_name: 'gpt-4o-mini', reason: 'no_key' }));
  });

  it('env file: a systemd-style and a docker-style parser read the same values', () => {
    const r = render(state(), base(), { modelsInConfig: true });
    const systemd = parseSystemdEnv(r.envFile);
    const docker = parseDockerEnv(r.envFile);
    expect(systemd).toEqual(r.env);
    expect(docker).toEqual(r.env);
    expect(Object.keys(r.env)).toHaveLength(7);
    // Every character the API allows in a key survives both parsers unchanged.
    const allowed = Array.from({ length: 95 }, (_, i) => String.fromCharCode(32 + i)).filter((c) => isKeyChar(c.charCodeAt(0))).join('');
    const s = state();
    s.keys = [{ name: 'odd', envVar: 'ODD_API_KEY', version: 1, value: `x${allowed}`, fingerprint: 'f', expiresAt: null }];
    const odd = render(s, {}, { modelsInConfig: true });
    expect(parseSystemdEnv(odd.envFile).ODD_API_KEY).toBe(`x${allowed}`);
    expect(parseDockerEnv(odd.envFile).ODD_API_KEY).toBe(`x${allowed}`);
  });
});

describe('yaml emitter', () => {
  const tricky = [
    'yes', 'No', 'on', 'OFF', 'y', 'n', '~', 'null', 'true', '1:20', '0x1F', '012', '1_000', '1e3', '.inf', '-.5', '2001-12-14', '', ' lead', 'trail ',
    'a #b', '#c', 'x: y', '- item', '[a]', '{a}', '*ref', '&anc', '!tag', '%p', '@at', '`bt', '"q"', "'s'", 'multi\nline', 'tab\tx', 'uni ✓ 日本',
    '\u0085nel', 'ls\u2028x', 'key:', 'http://x:8080/a?b=c&d', 'os.environ/OPENAI_API_KEY', '<<', '=', '?', '|', '>', 'a,b',
  ];
  const doc = {
    strings: tricky,
    numbers: [0, -1, 1.5, 1e-7, 1e21, 2 ** 53, -0.25],
    flags: [true, false, null],
    nested: { empty_map: {}, empty_list: [], lists: [[1, [2]], []], 'odd key: x': { yes: 'no' } },
    ...Object.fromEntries(tricky.filter(Boolean).map((s, i) => [s, i])),
  };

  it.each(['1.1', '1.2'] as const)('round-trips awkward values through a YAML %s parser', (version) => {
    expect(YAML.parse(emitYaml(doc), { version })).toEqual(doc);
  });
});

describe('base config', () => {
  const err = (text: string): BaseConfigError => {
    try {
      parseBaseConfig(text, '/etc/litellm/base.yaml');
    } catch (e) {
      return e as BaseConfigError;
    }
    throw new Error('expected a BaseConfigError');
  };

  it('a file that does not parse names the file, line and problem, without quoting the file', () => {
    const e = err('general_settings:\n  master_key: sk-very-secret-value-123\n  bad: [unclosed\nnext: 1\n');
    expect(e).toBeInstanceOf(BaseConfigError);
    expect(e.message).toMatch(/^KEYPLANE_BASE_CONFIG: \/etc\/litellm\/base\.yaml:\d+: /);
    expect(e.line).toBeGreaterThanOrEqual(3);
    expect(e.message).not.toContain('sk-very-secret');
  });

  it.each([
    ['model_list: {a: 1}\n', 'model_list must be a list', 1],
    ['router_settings:\n  model_group_alias: [a, b]\n', 'router_settings.model_group_alias must be a mapping', 2],
    ['litellm_settings:\n  fallbacks: nope\n', 'litellm_settings.fallbacks must be a list', 2],
    ['general_settings: 3\n', 'general_settings must be a mapping', 1],
    ['a: 1\nmodel_list:\n  - model_name: x\n    litellm_params: {model: openai/x}\n  - litellm_params: {model: y}\n', 'model_name and litellm_params.model', 5],
    ['- just\n- a list\n', 'top level must be a mapping', 1],
    ['a: 1\na: 2\n', 'Map keys must be unique', 2],
  ])('refuses %j', (text, problem, line) => {
    const e = err(text);
    expect(e.problem).toContain(problem);
    expect(e.line).toBe(line);
  });

  it('an empty file is an empty base; a missing one is a clear error', async () => {
    expect(parseBaseConfig('', 'b.yaml')).toEqual({});
    expect(parseBaseConfig('# only a comment\n', 'b.yaml')).toEqual({});
    await expect(loadBaseConfig('/nonexistent/base.yaml')).rejects.toThrow('KEYPLANE_BASE_CONFIG: /nonexistent/base.yaml: cannot be read (ENOENT)');
  });
});

describe('preview helpers', () => {
  it('lineDiff shows only changed lines with two lines of context, per hunk', () => {
    const before = ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j'].join('\n');
    const after = ['a', 'B', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j', 'k'].join('\n');
    expect(lineDiff(before, after)).toBe(['@@ line 1 @@', ' a', '-b', '+B', ' c', ' d', '@@ line 9 @@', ' i', ' j', '+k', ''].join('\n'));
    expect(lineDiff('same\n', 'same\n')).toBe('');
    expect(lineDiff('', 'x=1\n')).toBe(['@@ line 1 @@', '+x=1', ' ', ''].join('\n'));
  });

  it('maskConfigText hides secret-named values that are not references, URL passwords and known values', () => {
    const text = [
      'general_settings:',
      '  master_key: sk-literal-master-1',
      '  "database_url": postgres://u:hunter22@db/x',
      '  other_key: os.environ/OTHER_KEY',
      'model_list:',
      '  - api_key: "quoted-secret-1"',
      '    note: mentions known-value-123',
      '',
    ].join('\n');
    const masked = maskConfigText(text, ['known-value-123']);
    expect(masked).toBe(
      [
        'general_settings:',
        '  master_key: "****"',
        '  "database_url": postgres://u:****@db/x',
        '  other_key: os.environ/OTHER_KEY',
        'model_list:',
        '  - api_key: "****"',
        '    note: mentions ****',
        '',
      ].join('\n'),
    );
    expect(maskEnvText('# c\nA=abcdefgh12345678\nB=short\n')).toBe('# c\nA=****5678\nB=****\n');
  });
});
