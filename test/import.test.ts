import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { importLitellm, parseEnvFile } from '../src/import';
import { readEnvFile } from '../src/import/source';
import { startTestApp, type TestApp } from './helpers/app';

const dir = path.join(__dirname, 'fixtures', 'import');

describe('keyplane import', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp();
  });
  afterAll(async () => {
    await t.close();
  });

  it('parses env files the way systemd and docker read them', () => {
    expect(parseEnvFile('# c\n\nA=1\nexport B="two"\nC=\'three\'\n; x\nnot a line\n')).toEqual({ A: '1', B: 'two', C: 'three' });
  });

  it('knows the line of each variable; one set twice keeps its last value and line, as docker and systemd do', () => {
    expect([...readEnvFile('A=1\n# c\nB=2\nA=3\n')]).toEqual([
      ['B', { value: '2', line: 3 }],
      ['A', { value: '3', line: 4 }],
    ]);
  });

  it('imports keys, providers, models, aliases and fallbacks; a second run adds nothing', async () => {
    const first = await importLitellm(t.kp, { configFile: path.join(dir, 'config.yaml'), envFile: path.join(dir, 'litellm.env') });
    expect(first.keys.sort()).toEqual(['groq', 'litellm_master_key', 'openai', 'openrouter']);
    expect(first.models).toBe(4);
    expect(first.routing).toBe(true);
    expect(first.base_config).toBeNull();
    const keys = await t.api().get('/api/v1/admin/platform-keys').expect(200);
    expect(keys.body.items.map((k: { env_var: string }) => k.env_var).sort()).toEqual(['GROQ_API_KEY', 'LITELLM_MASTER_KEY', 'OPENAI_API_KEY', 'OPENROUTER_API_KEY']);
    const dec = await t.api().get('/api/v1/admin/platform-keys/openai/decrypted').expect(200);
    expect(dec.body.api_key).toBe('sk-import-test-openai-bbbb');
    const models = await t.api().get('/api/v1/admin/models').expect(200);
    const mini = models.body.items.find((m: { model_name: string }) => m.model_name === 'gpt-4o-mini');
    expect(mini).toMatchObject({ provider: 'openai', model: 'gpt-4o-mini', rpm: 60, litellm_params: { temperature: 0.1 }, model_info: { tier: 'cheap' } });
    const gpt4 = models.body.items.find((m: { model_name: string }) => m.model_name === 'gpt-4');
    expect(gpt4).toMatchObject({ provider: 'openrouter', model: 'openai/gpt-4' });
    const local = models.body.items.find((m: { model_name: string }) => m.model_name === 'local');
    expect(local).toMatchObject({ model: 'llama3', api_base: 'http://127.0.0.1:11434' });
    const routing = await t.api().get('/api/v1/admin/routing').expect(200);
    expect(routing.body).toMatchObject({ aliases: { balanced: 'gpt-4o-mini' }, fallbacks: { 'gpt-4': ['gpt-4o-mini'] } });

    const second = await importLitellm(t.kp, { configFile: path.join(dir, 'config.yaml'), envFile: path.join(dir, 'litellm.env') });
    expect(second.models).toBe(0);
    expect(second.models_skipped).toBe(4);
    const versions = await t.api().get('/api/v1/admin/platform-keys/openai/versions').expect(200);
    expect(versions.body.items).toHaveLength(1);
    expect(t.logs()).not.toContain('sk-import-test');
  });

  it('a deployment whose key is not in the env file waits for that key: it never takes another key of its kind', async () => {
    const tmp = mkdtempSync(path.join(os.tmpdir(), 'kp-import-missing-'));
    try {
      const config = path.join(tmp, 'config.yaml');
      writeFileSync(config, 'model_list:\n  - model_name: team-b\n    litellm_params: {model: openai/gpt-4o, api_key: os.environ/TEAM_B_OPENAI_API_KEY}\n');
      const s = await importLitellm(t.kp, { configFile: config });
      expect(s.skipped).toEqual([
        { what: 'TEAM_B_OPENAI_API_KEY', where: `${config}:3`, why: 'referenced at model_list[0].litellm_params.api_key but not in the env file: not imported (store it as platform key team_b_openai later)' },
      ]);
      const m = (await t.api().get('/api/v1/admin/models?model_name=team-b').expect(200)).body.items[0];
      expect((await t.api().get(`/api/v1/admin/providers/${m.provider}`).expect(200)).body).toMatchObject({ kind: 'openai', key_name: 'team_b_openai', active: false });
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  });
});
