import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { Keyring } from '../src/crypto/keyring';
import { createTestDatabase, type TestDatabase } from './helpers/db';

const run = promisify(execFile);
// Each run starts the CLI (through tsx when the build is older than the sources).
jest.setTimeout(90_000);

const BIN = path.resolve(__dirname, '..', 'bin', 'keyplane.js');
const team = path.join(__dirname, 'fixtures', 'import', 'team');

/** `keyplane import` as an admin runs it: the summary on stdout, or each problem on stderr and exit 1. */
describe('keyplane import on the command line', () => {
  let db: TestDatabase;
  let dir: string;
  let env: Record<string, string>;
  beforeAll(async () => {
    db = await createTestDatabase();
    dir = mkdtempSync(path.join(os.tmpdir(), 'kp-import-cli-'));
    env = { PATH: process.env.PATH!, HOME: dir, KEYPLANE_DATABASE_URL: db.url, KEYPLANE_DATA_DIR: dir, KEYPLANE_MASTER_KEY: Keyring.generateSpec('cli'), KEYPLANE_HEALTH_SCHEDULE: 'off' };
  });
  afterAll(async () => {
    rmSync(dir, { recursive: true, force: true });
    await db.drop();
  });

  it('--base-out: prints the summary (names, never values) and writes the base config', async () => {
    const baseOut = path.join(dir, 'litellm.base.yaml');
    const res = await run(process.execPath, [BIN, 'import', '--config', path.join(team, 'config.yaml'), '--env', path.join(team, 'litellm.env'), '--base-out', baseOut], { env });
    const summary = JSON.parse(res.stdout) as { keys: string[]; models: number; base_config: string };
    expect(summary).toMatchObject({ models: 7, base_config: baseOut });
    expect(summary.keys).toContain('azure-eu');
    expect(readFileSync(baseOut, 'utf8')).toContain('redis_password: os.environ/KP_REDIS_PASSWORD');
    expect(res.stdout + res.stderr).not.toMatch(/team-fixture-(openai|master|redis|azure|upstream|openrouter|secret)/);
  });

  it('a bad file: exit 1, one line per problem with file:line, nothing imported', async () => {
    const config = path.join(dir, 'bad.yaml');
    const envFile = path.join(dir, 'bad.env');
    writeFileSync(config, 'model_list:\n  - model_name: x\n    litellm_params: {model: opnai/gpt-4o, api_key: os.environ/NEW_API_KEY}\n');
    writeFileSync(envFile, 'NEW_API_KEY=sk-new;value-0001\n');
    const err = (await run(process.execPath, [BIN, 'import', '--config', config, '--env', envFile], { env }).catch((e: unknown) => e)) as { code: number; stdout: string; stderr: string };
    expect(err.code).toBe(1);
    expect(err.stderr.trim().split('\n')).toEqual([
      'keyplane: import refused, nothing was imported: 2 problem(s)',
      `  ${config}:3: model_list[0].litellm_params.model: unknown provider prefix "opnai": LiteLLM has no such provider (openai, anthropic, azure, bedrock, gemini, groq, openrouter, ollama, ...)`,
      `  ${envFile}:1: NEW_API_KEY: character ';' (U+003B) at position 7 is not allowed: a key holds only letters, digits and - _ . + / = : @ ,`,
    ]);
    expect(err.stdout).toBe('');
    const { rows } = await db.pool.query("SELECT count(*)::int AS n FROM platform_keys WHERE env_var = 'NEW_API_KEY'");
    expect(rows[0].n).toBe(0);
  });
});
