import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { importLitellm, ImportRefused, type ImportProblem } from '../src/import';
import { startTestApp, type TestApp } from './helpers/app';

/**
 * Issue 9 item 4: a malformed file, an unknown provider, a key that breaks the key rules, a setting
 * with nowhere safe to go, or a write the API refuses: each problem is reported with its file and
 * line (never a value), and nothing at all is imported.
 */

describe('keyplane import refuses bad input whole', () => {
  let t: TestApp;
  let tmp: string;
  beforeAll(async () => {
    t = await startTestApp();
  });
  afterAll(async () => {
    await t.close();
  });
  beforeEach(() => {
    tmp = mkdtempSync(path.join(os.tmpdir(), 'kp-import-bad-'));
  });
  afterEach(() => {
    rmSync(tmp, { recursive: true, force: true });
  });

  /** Everything an import could change, to compare before and after. */
  const snapshot = async (): Promise<unknown> => {
    const q = async (sql: string): Promise<unknown> => (await t.kp.pool.query(sql)).rows;
    return {
      audit: await q('SELECT max(id) AS id FROM audit_log'),
      keys: await q('SELECT name, env_var, current_version FROM platform_keys ORDER BY name'),
      providers: await q('SELECT slug, kind, api_base, key_name FROM providers ORDER BY slug'),
      models: await q('SELECT id FROM models ORDER BY id'),
      approvals: await q('SELECT key_name, destination FROM key_destinations ORDER BY key_name, destination'),
      routing: await q('SELECT version FROM routing'),
    };
  };

  const files = (config: string, env = ''): { configFile: string; envFile: string } => {
    const configFile = path.join(tmp, 'config.yaml');
    const envFile = path.join(tmp, 'litellm.env');
    writeFileSync(configFile, config);
    writeFileSync(envFile, env);
    return { configFile, envFile };
  };

  /** Runs the import, expects it refused, checks that nothing changed and nothing was left on disk; returns the problems. */
  const refused = async (input: { configFile?: string; envFile?: string; baseOut?: string }, secrets: string[] = []): Promise<ImportProblem[]> => {
    const before = await snapshot();
    const onDisk = readdirSync(tmp).sort();
    const err = await importLitellm(t.kp, input).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(ImportRefused);
    const problems = (err as ImportRefused).problems;
    expect((err as Error).message.split('\n')).toEqual([`import refused, nothing was imported: ${problems.length} problem(s)`, ...problems.map((p) => `  ${p.file}${p.line ? `:${p.line}` : ''}: ${p.field}: ${p.rule}`)]);
    for (const s of secrets) expect((err as Error).message).not.toContain(s);
    expect(await snapshot()).toEqual(before);
    expect(readdirSync(tmp).sort()).toEqual(onDisk);
    return problems;
  };

  it('a malformed YAML: every syntax error with its line', async () => {
    const f = files(
      ['model_list:', '  - model_name: gpt-4', '    litellm_params:', '      model: openai/gpt-4', '      model: openai/gpt-4o', '  - model_name: [unclosed', 'router_settings:', '  routing_strategy: simple-shuffle', ' bad_indent: 1', ''].join('\n'),
      'OPENAI_API_KEY=sk-bad-yaml-0001\n',
    );
    expect(await refused(f)).toEqual([
      { file: f.configFile, line: 5, field: '(yaml)', rule: 'Map keys must be unique' },
      { file: f.configFile, line: 7, field: '(yaml)', rule: expect.stringContaining('Flow sequence') },
      { file: f.configFile, line: 9, field: '(yaml)', rule: 'All mapping items must start at the same column' },
    ]);
    const top = files('- just\n- a list\n');
    expect(await refused(top)).toEqual([{ file: top.configFile, line: 1, field: '(top level)', rule: expect.stringContaining('must be a mapping') }]);
  });

  it('unknown provider prefixes, a missing prefix, a kind keyplane does not store, an unknown credential: each with its line', async () => {
    const f = files(
      [
        'model_list:',
        '  - model_name: typo', // 2
        '    litellm_params: {model: opnai/gpt-4o, api_key: os.environ/OPENAI_API_KEY}',
        '  - model_name: bare', // 4
        '    litellm_params:',
        '      model: gpt-4o-mini', // 6
        '  - model_name: legacy',
        '    litellm_params:',
        '      model: text-completion-openai/gpt-3.5-turbo-instruct', // 9
        '  - model_name: override',
        '    litellm_params:',
        '      model: llama-3',
        '      custom_llm_provider: llamacloud', // 13
        '  - model_name: via-cred',
        '    litellm_params:',
        '      model: azure/gpt-4o',
        '      litellm_credential_name: nowhere', // 17
        '',
      ].join('\n'),
      'OPENAI_API_KEY=sk-prefix-test-0001\n',
    );
    expect(await refused(f)).toEqual([
      { file: f.configFile, line: 3, field: 'model_list[0].litellm_params.model', rule: expect.stringContaining('unknown provider prefix "opnai"') },
      { file: f.configFile, line: 6, field: 'model_list[1].litellm_params.model', rule: expect.stringContaining('has no provider prefix') },
      { file: f.configFile, line: 9, field: 'model_list[2].litellm_params.model', rule: expect.stringContaining('text-completion-openai is not one keyplane stores') },
      { file: f.configFile, line: 13, field: 'model_list[3].litellm_params.custom_llm_provider', rule: expect.stringContaining('unknown provider prefix "llamacloud"') },
      { file: f.configFile, line: 17, field: 'model_list[4].litellm_params.litellm_credential_name', rule: 'names no credential of credential_list' },
    ]);
  });

  it('keys that break the key rules, by reference (at the env file line), in clear and in a credential (at the config line), never showing a value', async () => {
    const f = files(
      [
        'model_list:',
        '  - model_name: evil',
        '    litellm_params: {model: openai/gpt-x, api_key: os.environ/EVIL_API_KEY}', // 3
        '  - model_name: proxy',
        '    litellm_params: {model: groq/llama, api_key: os.environ/HTTPS_PROXY}', // 5
        '  - model_name: raw',
        '    litellm_params: {model: together_ai/m, api_key: "sk-raw(bad-0001"}', // 7
        '  - model_name: cred',
        '    litellm_params: {model: azure/gpt-4o, litellm_credential_name: spaced}',
        'credential_list:',
        '  - credential_name: spaced',
        '    credential_values:',
        '      api_key: "azure key with spaces"', // 13
        '      api_base: https://spaced.openai.azure.com',
        'general_settings:',
        '  master_key: os.environ/LITELLM_MASTER_KEY',
        '',
      ].join('\n'),
      ['# keys', 'EVIL_API_KEY=sk-aaaa;id>/tmp/x', 'HTTPS_PROXY=sk-fine-but-wrong-name', 'LITELLM_MASTER_KEY=not-an-sk-master-key', ''].join('\n'),
    );
    const problems = await refused(f, ['sk-aaaa', 'sk-raw', 'azure key with', 'not-an-sk-master', 'sk-fine-but']);
    expect(problems).toEqual([
      { file: f.envFile, line: 4, field: 'LITELLM_MASTER_KEY', rule: expect.stringContaining('must start with sk-') },
      { file: f.configFile, line: 13, field: 'credential_list[0].credential_values.api_key', rule: expect.stringContaining('character U+0020 at position 6') },
      { file: f.envFile, line: 2, field: 'EVIL_API_KEY', rule: expect.stringContaining("';' (U+003B) at position 8") },
      { file: f.configFile, line: 5, field: 'model_list[1].litellm_params.api_key (HTTPS_PROXY)', rule: expect.stringContaining('steers the LiteLLM process') },
      { file: f.configFile, line: 7, field: 'model_list[2].litellm_params.api_key', rule: expect.stringContaining("'(' (U+0028) at position 7") },
    ]);
  });

  it('parameters that steer where a key goes, and secrets the API would refuse, at their lines', async () => {
    const f = files(
      [
        'model_list:',
        '  - model_name: bedrock',
        '    litellm_params:',
        '      model: bedrock/anthropic.claude-3',
        '      api_key: os.environ/BEDROCK_API_KEY',
        '      aws_bedrock_runtime_endpoint: https://evil.example', // 6
        '  - model_name: both',
        '    litellm_params:',
        '      model: openai/gpt-4o',
        '      api_key: os.environ/OPENAI_API_KEY',
        '      api_base: https://one.example/v1',
        '      base_url: https://two.example/v1', // 12
        '  - model_name: header',
        '    litellm_params:',
        '      model: openai/gpt-4o-mini',
        '      api_key: os.environ/OPENAI_API_KEY',
        '      extra_headers:',
        '        Authorization: Bearer sk-header-secret-0001', // 18
        '  - model_name: badurl',
        '    litellm_params:',
        '      model: openai/gpt-4.1',
        '      api_key: os.environ/OPENAI_API_KEY',
        '      api_base: os.environ/BAD_BASE', // 23
        '',
      ].join('\n'),
      'BEDROCK_API_KEY=bedrock-key-0001\nOPENAI_API_KEY=sk-steer-openai-0001\nBAD_BASE=ftp://files.example\n',
    );
    expect(await refused(f, ['sk-header-secret'])).toEqual([
      { file: f.configFile, line: 6, field: 'model_list[0].litellm_params.aws_bedrock_runtime_endpoint', rule: expect.stringContaining('chooses where requests and their key go') },
      { file: f.configFile, line: 12, field: 'model_list[1].litellm_params.base_url', rule: expect.stringContaining('differs from api_base') },
      { file: f.configFile, line: 18, field: 'model_list[2].litellm_params.extra_headers.Authorization', rule: expect.stringContaining('must not hold a raw secret') },
      { file: f.configFile, line: 23, field: 'model_list[3].litellm_params.api_base', rule: 'must start with http:// or https://' },
    ]);
  });

  it('settings: a secret in clear that cannot be a key, settings with no --base-out, a --base-out that would be overwritten', async () => {
    const config = [
      'model_list: []',
      'general_settings:',
      '  database_url: postgresql://litellm:pg-pass-0001@postgres:5432/litellm', // 3
      'environment_variables:',
      '  REDIS_PASSWORD: redis-secret-0001', // 5
      '  LANGFUSE_HOST: https://cloud.langfuse.com',
      '',
    ].join('\n');
    const f = files(config);
    expect(await refused({ ...f, baseOut: path.join(tmp, 'base.yaml') }, ['pg-pass-0001', 'redis-secret-0001'])).toEqual([
      { file: f.configFile, line: 3, field: 'general_settings.database_url', rule: expect.stringContaining('must be the key itself, not a URL') },
      { file: f.configFile, line: 5, field: 'environment_variables.REDIS_PASSWORD', rule: expect.stringContaining('names starting with REDIS_ are refused') },
    ]);
    const clean = files('router_settings:\n  routing_strategy: latency-based-routing\n  model_group_alias: {fast: gpt-4o-mini}\n');
    expect(await refused(clean)).toEqual([
      { file: clean.configFile, line: 2, field: 'router_settings', rule: expect.stringContaining('give --base-out FILE') },
    ]);
    const baseOut = path.join(tmp, 'mine.yaml');
    writeFileSync(baseOut, 'litellm_settings: {drop_params: false}\n');
    expect(await refused({ ...clean, baseOut })).toEqual([{ file: baseOut, field: '--base-out', rule: expect.stringContaining('exists with other content') }]);
    expect(readFileSync(baseOut, 'utf8')).toBe('litellm_settings: {drop_params: false}\n');
  });

  it('a file that cannot be read', async () => {
    const missing = path.join(tmp, 'nope.yaml');
    expect(await refused({ configFile: missing })).toEqual([{ file: missing, field: '(file)', rule: 'cannot be read (ENOENT)' }]);
  });

  it('one transaction: a write the API refuses late rolls back the keys, providers and approvals written before it', async () => {
    // A string stored in clear may not equal a key's value (issue 8): the model below is refused when
    // it is written, after its key and provider were (inside the import's transaction).
    await t.api().put('/api/v1/admin/platform-keys/legacy').send({ api_key: 'sk-legacy-value-0001' }).expect(200);
    const f = files(
      [
        'model_list:',
        '  - model_name: first',
        '    litellm_params: {model: mistral/mistral-large, api_key: os.environ/MISTRAL_API_KEY}',
        '  - model_name: second',
        '    litellm_params: {model: deepseek/deepseek-chat, api_key: os.environ/DEEPSEEK_API_KEY}',
        '    model_info:',
        '      note: sk-legacy-value-0001', // 7
        '  - model_name: third',
        '    litellm_params: {model: mistral/mistral-small, api_key: os.environ/MISTRAL_API_KEY}',
        '    model_info: {owner: sk-legacy-value-0001}', // 10
        '',
      ].join('\n'),
      'MISTRAL_API_KEY=mistral-key-0001\nDEEPSEEK_API_KEY=deepseek-key-0001\n',
    );
    expect(await refused(f, ['sk-legacy-value', 'mistral-key-0001'])).toEqual([
      { file: f.configFile, line: 7, field: 'model_list[1].model_info.note', rule: 'must not hold the value of a platform key: reference the key instead' },
      // The refused write was rolled back to its savepoint, so the import went on and found the next one.
      { file: f.configFile, line: 10, field: 'model_list[2].model_info.owner', rule: 'must not hold the value of a platform key: reference the key instead' },
    ]);
    await t.api().get('/api/v1/admin/platform-keys/mistral').expect(404);
    await t.api().get('/api/v1/admin/providers/mistral').expect(404);
    expect(existsSync(path.join(tmp, 'base.yaml'))).toBe(false);
  });
});
