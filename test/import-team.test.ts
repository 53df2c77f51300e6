import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { importLitellm, parseEnvFile, type ImportSummary } from '../src/import';
import { parseBaseConfig } from '../src/sync/base-config';
import { loadDesiredState } from '../src/sync/desired-state';
import { render } from '../src/sync/renderer';
import { startTestApp, type TestApp } from './helpers/app';
import { loadWithPyYaml, requirePyYaml } from './helpers/pyyaml';

/**
 * Issue 9 item 4 on a realistic setup (test/fixtures/import/team: the seeds' shapes, fake keys): named
 * credentials, keys in clear and by reference, ${VAR} placeholders, settings keyplane does not manage
 * carried into a base config that holds no secret, every skip reported; then what keyplane renders
 * from it, read back the way LiteLLM reads it.
 */

const dir = path.join(__dirname, 'fixtures', 'import', 'team');
const configFile = path.join(dir, 'config.yaml');
const envFile = path.join(dir, 'litellm.env');

interface Model {
  model_name: string;
  provider: string;
  model: string;
  api_base: string | null;
  rpm: number | null;
  litellm_params: Record<string, unknown>;
  model_info: Record<string, unknown>;
}

describe('keyplane import: a team setup with credentials and settings', () => {
  let t: TestApp;
  let out: string;
  let first: ImportSummary;
  beforeAll(async () => {
    requirePyYaml();
    t = await startTestApp();
    out = mkdtempSync(path.join(os.tmpdir(), 'kp-import-team-'));
    first = await importLitellm(t.kp, { configFile, envFile, baseOut: path.join(out, 'litellm.base.yaml') });
  });
  afterAll(async () => {
    rmSync(out, { recursive: true, force: true });
    await t.close();
  });

  const model = async (name: string): Promise<Model> => {
    const res = await t.api().get(`/api/v1/admin/models?model_name=${encodeURIComponent(name)}`).expect(200);
    expect(res.body.items).toHaveLength(1);
    return res.body.items[0] as Model;
  };
  const decrypted = async (name: string): Promise<{ api_key: string; env_var: string }> => {
    const res = await t.api().get(`/api/v1/admin/platform-keys/${name}/decrypted`).expect(200);
    const head = await t.api().get(`/api/v1/admin/platform-keys/${name}`).expect(200);
    return { api_key: res.body.api_key, env_var: head.body.env_var };
  };

  it('stores every key once: by reference (named after its variable), in clear, from a credential, LiteLLM master key from ${VAR}', async () => {
    expect(first.keys.sort()).toEqual(
      ['anthropic', 'azure-eu', 'langfuse_public_key', 'langfuse_secret_key', 'litellm_master_key', 'openai', 'openrouter', 'redis_password', 'together', 'upstream_litellm'].sort(),
    );
    expect(first.keys_written.sort()).toEqual(first.keys.sort());
    const env = parseEnvFile(readFileSync(envFile, 'utf8'));
    expect(await decrypted('litellm_master_key')).toEqual({ api_key: env.LITELLM_MASTER_KEY, env_var: 'LITELLM_MASTER_KEY' });
    expect(await decrypted('upstream_litellm')).toEqual({ api_key: env.UPSTREAM_LITELLM_API_KEY, env_var: 'UPSTREAM_LITELLM_API_KEY' });
    // A credential's key is named after the credential and keeps the variable it referenced.
    expect(await decrypted('azure-eu')).toEqual({ api_key: env.AZURE_EU_API_KEY, env_var: 'AZURE_EU_API_KEY' });
    // Keys written in clear: the deployment's (default variable of its key name) and a setting's (REDIS_ is refused, so KP_).
    expect(await decrypted('together')).toEqual({ api_key: 'tgp_v1_team-fixture-literal-together-key', env_var: 'TOGETHER_API_KEY' });
    expect(await decrypted('redis_password')).toEqual({ api_key: 'team-fixture-redis-literal-password', env_var: 'KP_REDIS_PASSWORD' });
    expect(await decrypted('langfuse_secret_key')).toEqual({ api_key: 'sk-lf-team-fixture-secret-0001', env_var: 'LANGFUSE_SECRET_KEY' });
    expect(first.notes).toEqual(
      expect.arrayContaining([
        'model_list[1].litellm_params.api_key: ${UPSTREAM_LITELLM_API_KEY} (which LiteLLM does not expand itself) read as os.environ/UPSTREAM_LITELLM_API_KEY',
        'router_settings.redis_password: a secret written in clear is now platform key redis_password (KP_REDIS_PASSWORD), referenced as os.environ/KP_REDIS_PASSWORD',
      ]),
    );
  });

  it('maps each deployment: credential -> a provider with its key and api_base, ${VAR} api_base written in, custom_llm_provider -> kind, no api_key -> the variable LiteLLM would read', async () => {
    expect(first.models).toBe(7);
    expect(first.providers.sort()).toEqual(['azure-eu', 'ollama-nokey', 'upstream-litellm']);
    const azure = await model('gpt-4o-eu');
    expect(azure).toMatchObject({ provider: 'azure-eu', model: 'gpt-4o-eu-deployment', api_base: null, litellm_params: { api_version: '2024-10-21' } });
    // The credential's key and api_base are its provider's: every deployment naming it goes there.
    expect((await t.api().get('/api/v1/admin/providers/azure-eu').expect(200)).body).toMatchObject({ kind: 'azure', key_name: 'azure-eu', api_base: 'https://team-eu.openai.azure.com', active: true });
    expect(await model('wsdlitellm/wsd-atlas')).toMatchObject({ provider: 'upstream-litellm', model: 'wsd-atlas', api_base: 'https://uat-litellm.team.example' });
    // A new provider goes where its key went, so the key is approved for that host only.
    expect((await t.api().get('/api/v1/admin/providers/upstream-litellm').expect(200)).body).toMatchObject({ kind: 'openai', key_name: 'upstream_litellm', api_base: 'https://uat-litellm.team.example' });
    expect(await model('llama-fast')).toMatchObject({ provider: 'together', model: 'meta-llama/Llama-3.3-70B-Instruct-Turbo', litellm_params: {} });
    expect(await model('gpt-4o-mini')).toMatchObject({ provider: 'openai', rpm: 60, model_info: { tier: 'cheap' } });
    expect((await t.api().get('/api/v1/admin/providers/openai').expect(200)).body).toMatchObject({ key_name: 'openai', active: true });
    expect(await model('llama-local')).toMatchObject({ provider: 'ollama-nokey', api_base: 'http://127.0.0.1:11434' });
    expect(await model('claude-3-5-sonnet')).toMatchObject({ provider: 'anthropic', litellm_params: { max_tokens: 4096 } });
    // The import ran as an admin: it approved the pairs it made (issue 8).
    expect((await t.api().get('/api/v1/admin/platform-keys/azure-eu/allowed-hosts').expect(200)).body.allowed_hosts).toEqual(['https://team-eu.openai.azure.com']);
    expect((await t.api().get('/api/v1/admin/platform-keys/upstream_litellm/allowed-hosts').expect(200)).body.allowed_hosts).toEqual(['https://uat-litellm.team.example']);
    const routing = await t.api().get('/api/v1/admin/routing').expect(200);
    expect(routing.body).toMatchObject({
      aliases: { balanced: 'gpt-4o-mini', smart: 'claude-3-5-sonnet' },
      fallbacks: { 'gpt-4': ['claude-3-5-sonnet'], 'claude-3-5-sonnet': ['gpt-4o-mini'] },
    });
  });

  it('writes the unmanaged settings to the base config, secrets only as os.environ/VAR, and says what stays in LiteLLM\'s environment', async () => {
    const baseFile = path.join(out, 'litellm.base.yaml');
    expect(first.base_config).toBe(baseFile);
    const text = readFileSync(baseFile, 'utf8');
    expect(statSync(baseFile).mode & 0o777).toBe(0o644);
    const base = parseBaseConfig(text, baseFile);
    expect(base).toEqual({
      router_settings: { routing_strategy: 'simple-shuffle', num_retries: 2, redis_host: 'os.environ/REDIS_HOST', redis_password: 'os.environ/KP_REDIS_PASSWORD' },
      litellm_settings: {
        drop_params: true,
        request_timeout: 600,
        success_callback: ['langfuse'],
        cache: true,
        cache_params: { type: 'redis', password: 'os.environ/REDIS_PASSWORD' },
        context_window_fallbacks: [{ 'gpt-4o-mini': ['gpt-4'] }],
      },
      general_settings: { allow_non_registered_models: true, database_url: 'os.environ/DATABASE_URL', request_logging: true },
      environment_variables: { LANGFUSE_HOST: 'https://cloud.langfuse.com' },
    });
    for (const secret of [...Object.values(parseEnvFile(readFileSync(envFile, 'utf8'))).filter((v) => v.length >= 8), 'team-fixture-redis-literal-password', 'sk-lf-team-fixture-secret-0001']) {
      if (!secret.startsWith('http')) expect(text).not.toContain(secret);
    }
    // Nothing else is left in the directory (the staged file was renamed into place).
    expect(readdirSync(out)).toEqual(['litellm.base.yaml']);
    const skipped = Object.fromEntries(first.skipped.map((s) => [s.what, s]));
    expect(skipped.DATABASE_URL).toEqual({ what: 'DATABASE_URL', where: `${configFile}:74`, why: "stays in LiteLLM's own environment (general_settings.database_url is no credential)" });
    expect(skipped.REDIS_PASSWORD?.why).toMatch(/^stays in LiteLLM's own environment: keyplane does not store it as a key \(it steers the LiteLLM process/);
    expect(skipped.UI_PASSWORD).toMatchObject({ where: `${envFile}:27`, why: expect.stringMatching(/^not referenced by the config; stays in LiteLLM's own environment/) });
    expect(skipped.POSTGRES_PASSWORD).toEqual({ what: 'POSTGRES_PASSWORD', where: `${envFile}:5`, why: 'not referenced by the config: not imported' });
    expect(skipped['model_list[4] key']?.where).toBe(`${configFile}:25`);
    expect(skipped['router_settings.model_group_alias.smart.hidden']).toBeDefined();
    expect(JSON.stringify(first)).not.toMatch(/team-fixture-(openai|master|redis|ui|pg|azure|upstream|openrouter)/);
  });

  it('renders, with that base config, a config.yaml LiteLLM loads: every deployment with a key, the settings, the master key by reference', async () => {
    const baseFile = path.join(out, 'litellm.base.yaml');
    const r = render(await loadDesiredState(t.kp.pool, t.kp.platformKeys), parseBaseConfig(readFileSync(baseFile, 'utf8'), baseFile), { modelsInConfig: true });
    expect(r.skipped).toEqual([expect.objectContaining({ model_name: 'llama-local', reason: 'no_key' })]);
    const file = path.join(out, 'config.yaml');
    writeFileSync(file, r.configYaml);
    const loaded = loadWithPyYaml(file) as Record<string, Record<string, unknown>> & { model_list: Array<{ model_name: string; litellm_params: Record<string, unknown> }> };
    rmSync(file);
    const byName = Object.fromEntries(loaded.model_list.map((m) => [m.model_name, m.litellm_params]));
    expect(byName['gpt-4o-eu']).toEqual({ model: 'azure/gpt-4o-eu-deployment', api_base: 'https://team-eu.openai.azure.com', api_key: 'os.environ/AZURE_EU_API_KEY', api_version: '2024-10-21' });
    expect(byName['wsdlitellm/wsd-atlas']).toEqual({ model: 'openai/wsd-atlas', api_base: 'https://uat-litellm.team.example', api_key: 'os.environ/UPSTREAM_LITELLM_API_KEY' });
    expect(byName['llama-fast']).toEqual({ model: 'together_ai/meta-llama/Llama-3.3-70B-Instruct-Turbo', api_key: 'os.environ/TOGETHER_API_KEY' });
    expect(byName['gpt-4']).toEqual({ model: 'openrouter/openai/gpt-4', api_key: 'os.environ/OPENROUTER_API_KEY' });
    expect(loaded.general_settings).toEqual({ allow_non_registered_models: true, database_url: 'os.environ/DATABASE_URL', request_logging: true, master_key: 'os.environ/LITELLM_MASTER_KEY' });
    expect(loaded.router_settings).toMatchObject({ redis_password: 'os.environ/KP_REDIS_PASSWORD', model_group_alias: { balanced: 'gpt-4o-mini', smart: 'claude-3-5-sonnet' } });
    expect(loaded.litellm_settings).toMatchObject({ cache: true, fallbacks: [{ 'claude-3-5-sonnet': ['gpt-4o-mini'] }, { 'gpt-4': ['claude-3-5-sonnet'] }] });
    const env = parseEnvFile(r.envFile);
    expect(Object.keys(env).sort()).toEqual(
      ['ANTHROPIC_API_KEY', 'AZURE_EU_API_KEY', 'KP_REDIS_PASSWORD', 'LANGFUSE_PUBLIC_KEY', 'LANGFUSE_SECRET_KEY', 'LITELLM_MASTER_KEY', 'OPENAI_API_KEY', 'OPENROUTER_API_KEY', 'TOGETHER_API_KEY', 'UPSTREAM_LITELLM_API_KEY'].sort(),
    );
  });

  it('a second run adds nothing: no new version, provider, deployment or routing change; the base config is left as it is', async () => {
    const baseFile = path.join(out, 'litellm.base.yaml');
    const before = readFileSync(baseFile, 'utf8');
    const auditBefore = (await t.api().get('/api/v1/admin/audit?limit=1').expect(200)).body.items[0].id as number;
    const again = await importLitellm(t.kp, { configFile, envFile, baseOut: baseFile });
    expect(again).toMatchObject({ keys_written: [], providers: [], models: 0, models_skipped: 7, routing: false, base_config: baseFile });
    expect(again.keys.sort()).toEqual(first.keys.sort());
    expect(readFileSync(baseFile, 'utf8')).toBe(before);
    const versions = await t.api().get('/api/v1/admin/platform-keys/azure-eu/versions').expect(200);
    expect(versions.body.items).toHaveLength(1);
    // Only the import's own summary row was added to the audit trail.
    const audit = await t.api().get('/api/v1/admin/audit?limit=5').expect(200);
    expect(audit.body.items.filter((a: { id: number }) => a.id > auditBefore).map((a: { action: string }) => a.action)).toEqual(['import.litellm']);
  });
});
