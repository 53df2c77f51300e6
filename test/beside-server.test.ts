import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readlinkSync, realpathSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { Keyring } from '../src/crypto/keyring';
import { processes } from './helpers/npm-start';
import { freePort } from './helpers/reload';
import { startServeChild, type ServeChild } from './helpers/serve-child';

const run = promisify(execFile);
jest.setTimeout(120_000);
const BIN = path.resolve(__dirname, '..', 'bin', 'keyplane.js');

/**
 * The commands an operator runs while `keyplane serve` runs on its embedded Postgres: each uses
 * that server's cluster (it holds the lock) instead of failing, and leaves it running.
 */
describe('commands beside a running keyplane serve on the embedded Postgres', () => {
  const dataDir = mkdtempSync(path.join(os.tmpdir(), 'keyplane-beside-'));
  const k1 = Keyring.generateSpec('k1');
  const k2 = Keyring.generateSpec('k2');
  const token = 'beside-test-admin-token-0123456789';
  let server: ServeChild | undefined;
  let url = '';
  let postmaster = 0;
  afterAll(async () => {
    await server?.stop();
    rmSync(dataDir, { recursive: true, force: true });
  });

  const cli = (args: string[], masterKey = `${k2},${k1}`) => run(process.execPath, [BIN, ...args], { env: { PATH: process.env.PATH!, KEYPLANE_DATA_DIR: dataDir, KEYPLANE_MASTER_KEY: masterKey } });
  const pidFile = path.join(dataDir, 'pg', 'postmaster.pid');
  const clusterProcesses = (): Array<{ pid: number; ppid: number }> => {
    const real = realpathSync(path.join(dataDir, 'pg'));
    return processes().filter((p) => {
      try {
        return readlinkSync(`/proc/${p.pid}/cwd`) === real;
      } catch {
        return false;
      }
    });
  };

  /** The server's Postgres still serves, alone: no command started a cluster of its own. */
  async function serverUnharmed(): Promise<void> {
    expect(Number(readFileSync(pidFile, 'utf8').split('\n')[0])).toBe(postmaster);
    for (const p of clusterProcesses()) expect(p.pid === postmaster || p.ppid === postmaster).toBe(true);
    expect((await fetch(`${url}/readyz`)).status).toBe(200);
  }

  beforeAll(async () => {
    const port = await freePort();
    url = `http://127.0.0.1:${port}`;
    server = startServeChild('beside', { KEYPLANE_DATA_DIR: dataDir, KEYPLANE_LISTEN: `127.0.0.1:${port}`, KEYPLANE_MASTER_KEY: `${k2},${k1}`, KEYPLANE_ADMIN_TOKEN: token, KEYPLANE_HEALTH_SCHEDULE: 'off' });
    await server.waitForLog('admin API listening', 90_000);
    postmaster = Number(readFileSync(pidFile, 'utf8').split('\n')[0]);
  });

  it('import', async () => {
    const fixtures = path.resolve(__dirname, 'fixtures', 'import');
    // k1 first: what it imports is encrypted under k1, for the rotation below to move.
    const res = await cli(['import', '--config', path.join(fixtures, 'config.yaml'), '--env', path.join(fixtures, 'litellm.env')], `${k1},${k2}`);
    expect((JSON.parse(res.stdout) as { keys: string[] }).keys.sort()).toEqual(['groq', 'litellm_master_key', 'openai', 'openrouter']);
    await serverUnharmed();
  });

  it('token create', async () => {
    const res = await cli(['token', 'create', '--role', 'viewer', '--name', 'beside-bot']);
    const bot = res.stdout.trim().split('\n').pop()!;
    const list = await fetch(`${url}/api/v1/admin/platform-keys`, { headers: { Authorization: `Bearer ${bot}` } });
    expect(list.status).toBe(200);
    await serverUnharmed();
  });

  it('render', async () => {
    // The server leads (it holds the render lock): the render is asked of it, and its outcome shown.
    const res = await cli(['render']);
    const r = JSON.parse(res.stdout) as { renderedBy: string; outcome: { status: string } };
    expect(r.renderedBy).toBe('beside');
    expect(r.outcome.status).toMatch(/^(changed|unchanged)$/);
    const dry = await cli(['render', '--dry-run']);
    expect((JSON.parse(dry.stdout) as { dryRun: boolean }).dryRun).toBe(true);
    expect(readFileSync(path.join(dataDir, 'litellm', 'litellm.env'), 'utf8')).toContain('OPENAI_API_KEY=sk-import-test-openai-bbbb');
    await serverUnharmed();
  });

  it('doctor', async () => {
    const res = await cli(['doctor']);
    expect(res.stdout).toContain(`OK   database: the embedded Postgres of the running keyplane (postmaster ${postmaster}, `);
    expect(res.stdout).toMatch(/^all checks passed$/m);
    await serverUnharmed();
  });

  it('master-key rotate', async () => {
    const res = await cli(['master-key', 'rotate']);
    expect(res.stdout).toMatch(/^re-encrypted 4 secret\(s\) under master key k2; \d+ already used it$/m);
    const got = await fetch(`${url}/api/v1/admin/platform-keys/openai/decrypted`, { headers: { Authorization: `Bearer ${token}` } });
    expect(await got.json()).toMatchObject({ api_key: 'sk-import-test-openai-bbbb' });
    await serverUnharmed();
  });

  it('the server then stops its Postgres as usual', async () => {
    await server!.stop();
    expect(server!.exited).toBe(true);
    expect(existsSync(pidFile)).toBe(false);
    expect(clusterProcesses()).toEqual([]);
  });
});
