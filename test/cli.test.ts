import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync, statSync, existsSync } from 'node:fs';
import { createServer } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { Keyring } from '../src/crypto/keyring';

const run = promisify(execFile);

// A test here starts keyplane (and its embedded Postgres, initdb the first time) up to twice, each
// allowed 60 s to get ready; jest's 30 s default would cut a slow but healthy start short.
jest.setTimeout(150_000);
const BIN = path.resolve(__dirname, '..', 'bin', 'keyplane.js');

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const p = (s.address() as { port: number }).port;
      s.close(() => resolve(p));
    });
  });
}

interface Served {
  proc: ChildProcess;
  url: string;
  output: () => string;
}

/** Servers a test started and has not stopped yet; stopped after each test, so a failed one leaves none behind. */
const serving = new Set<Served>();

async function serve(env: Record<string, string>): Promise<Served> {
  const port = await freePort();
  const proc = spawn(process.execPath, [BIN, 'serve'], {
    env: { PATH: process.env.PATH!, HOME: process.env.HOME ?? '/tmp', KEYPLANE_LISTEN: `127.0.0.1:${port}`, KEYPLANE_HEALTH_SCHEDULE: 'off', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  const served: Served = { proc, url: `http://127.0.0.1:${port}`, output: () => out };
  serving.add(served);
  proc.stdout!.on('data', (c) => (out += c));
  proc.stderr!.on('data', (c) => (out += c));
  const url = served.url;
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`keyplane exited with ${proc.exitCode}: ${out}`);
    try {
      const r = await fetch(`${url}/readyz`);
      if (r.ok) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`keyplane did not become ready: ${out}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return served;
}

async function stop(s: Served): Promise<number | null> {
  serving.delete(s);
  if (s.proc.exitCode !== null || s.proc.signalCode !== null) return s.proc.exitCode;
  const exited = once(s.proc, 'exit') as Promise<[number | null]>;
  s.proc.kill('SIGTERM');
  return (await exited)[0];
}

function postgresPid(dataDir: string): number | undefined {
  const f = path.join(dataDir, 'pg', 'postmaster.pid');
  return existsSync(f) ? Number(readFileSync(f, 'utf8').split('\n')[0]) : undefined;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe('keyplane command, on its embedded Postgres', () => {
  const dataDir = mkdtempSync(path.join(os.tmpdir(), 'keyplane-cli-'));
  const token = 'cli-test-admin-token-0123456789';
  const rotatedKey = Keyring.generateSpec('k2');
  afterEach(async () => {
    for (const s of [...serving]) await stop(s);
  });
  afterAll(() => rmSync(dataDir, { recursive: true, force: true }));

  it('serve: generates a dev master key (0600, with a warning), keeps keys across a restart, stops cleanly on SIGTERM', async () => {
    const env = { KEYPLANE_DATA_DIR: dataDir, KEYPLANE_ADMIN_TOKEN: token };
    const first = await serve(env);
    expect(first.output()).toMatch(/DEVELOPMENT MASTER KEY/);
    expect(statSync(path.join(dataDir, 'master.key')).mode & 0o777).toBe(0o600);
    const put = await fetch(`${first.url}/api/v1/admin/platform-keys/openrouter`, {
      method: 'PUT',
      headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
      body: JSON.stringify({ api_key: 'sk-or-v1-survives-restart-4242' }),
    });
    expect(put.status).toBe(200);
    const pgPid = postgresPid(dataDir);
    expect(pgPid).toBeGreaterThan(0);
    expect(await stop(first)).toBe(0);
    expect(alive(pgPid!)).toBe(false);
    expect(first.output()).not.toContain('sk-or-v1-survives-restart-4242');

    const second = await serve(env);
    const got = await fetch(`${second.url}/api/v1/admin/platform-keys/openrouter/decrypted`, { headers: { Authorization: `Bearer ${token}` } });
    expect(await got.json()).toMatchObject({ api_key: 'sk-or-v1-survives-restart-4242', version: 1 });
    expect(await stop(second)).toBe(0);
  });

  it('a keyring without the stored key id stops start-up and names the id', async () => {
    const other = Keyring.generateSpec('prod2026');
    const res = await run(process.execPath, [BIN, 'serve'], { env: { PATH: process.env.PATH!, KEYPLANE_DATA_DIR: dataDir, KEYPLANE_MASTER_KEY: other } }).catch((e) => e);
    expect(res.code).toBe(78);
    expect(res.stderr).toMatch(/master key id\(s\) dev/);
    expect(res.stderr).not.toContain(other.split(':')[1]);
    expect(postgresPid(dataDir)).toBeUndefined();
  });

  it('master-key rotate re-encrypts under a new first key; the old key may then be dropped', async () => {
    const dev = readFileSync(path.join(dataDir, 'master.key'), 'utf8').trim();
    const next = rotatedKey;
    const base = { PATH: process.env.PATH!, KEYPLANE_DATA_DIR: dataDir };
    const rotated = await run(process.execPath, [BIN, 'master-key', 'rotate'], { env: { ...base, KEYPLANE_MASTER_KEY: `${next},${dev}` } });
    expect(rotated.stdout).toMatch(/re-encrypted 2 secret\(s\) under master key k2; 0 already used it/);
    const again = await run(process.execPath, [BIN, 'master-key', 'rotate'], { env: { ...base, KEYPLANE_MASTER_KEY: `${next},${dev}` } });
    expect(again.stdout).toMatch(/re-encrypted 0 secret\(s\).*2 already used it/);
    const s = await serve({ KEYPLANE_DATA_DIR: dataDir, KEYPLANE_MASTER_KEY: next, KEYPLANE_ADMIN_TOKEN: token });
    const got = await fetch(`${s.url}/api/v1/admin/platform-keys/openrouter/decrypted`, { headers: { Authorization: `Bearer ${token}` } });
    expect(((await got.json()) as { api_key: string }).api_key).toBe('sk-or-v1-survives-restart-4242');
    expect(await stop(s)).toBe(0);
  });

  it('token create prints a token once, which then works with its role', async () => {
    const env = { PATH: process.env.PATH!, KEYPLANE_DATA_DIR: dataDir, KEYPLANE_MASTER_KEY: rotatedKey };
    const created = await run(process.execPath, [BIN, 'token', 'create', '--role', 'viewer', '--name', 'ci-bot'], { env });
    const lines = created.stdout.trim().split('\n');
    const bot = lines[lines.length - 1]!;
    expect(bot).toMatch(/^kp_[A-Za-z0-9_-]{43}$/);
    const bad = await run(process.execPath, [BIN, 'token', 'create', '--role', 'root', '--name', 'x'], { env }).catch((e) => e);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--role must be admin, operator or viewer/);
    const s = await serve({ KEYPLANE_DATA_DIR: dataDir, KEYPLANE_MASTER_KEY: rotatedKey });
    const list = await fetch(`${s.url}/api/v1/admin/platform-keys`, { headers: { Authorization: `Bearer ${bot}` } });
    expect(list.status).toBe(200);
    const put = await fetch(`${s.url}/api/v1/admin/platform-keys/x1`, {
      method: 'PUT',
      headers: { Authorization: `Bearer ${bot}`, 'Content-Type': 'application/json' },
      body: JSON.stringify({ api_key: 'sk-not-allowed-1234' }),
    });
    expect(put.status).toBe(403);
    expect(await stop(s)).toBe(0);
  });

  it('import --config FILE --env FILE reads an existing LiteLLM setup; doctor checks it all', async () => {
    const env = { PATH: process.env.PATH!, KEYPLANE_DATA_DIR: dataDir, KEYPLANE_MASTER_KEY: rotatedKey };
    const fixtures = path.resolve(__dirname, 'fixtures', 'import');
    const res = await run(process.execPath, [BIN, 'import', '--config', path.join(fixtures, 'config.yaml'), '--env', path.join(fixtures, 'litellm.env')], { env });
    const summary = JSON.parse(res.stdout) as { keys: string[]; models: number };
    expect(summary.keys.sort()).toEqual(['groq', 'litellm_master_key', 'openai', 'openrouter']);
    expect(summary.models).toBe(4);
    expect(res.stdout + res.stderr).not.toContain('sk-import-test');
    const doctor = await run(process.execPath, [BIN, 'doctor'], { env });
    expect(doctor.stdout).toMatch(/^OK   master key: KEYPLANE_MASTER_KEY: k2 \(sha256:[0-9a-f]{8}\)$/m);
    const m = /^OK   secrets: all (\d+) secret\(s\) decrypt \(\d+ under k2\)$/m.exec(doctor.stdout);
    expect(Number(m?.[1])).toBeGreaterThanOrEqual(5);
    expect(doctor.stdout).toMatch(/^all checks passed$/m);
    expect(doctor.stdout).not.toContain(rotatedKey.split(':')[1]);

    // render --dry-run shows what would be written (values masked) and writes nothing; render writes.
    const configPath = path.join(dataDir, 'litellm', 'config.yaml');
    const envPath = path.join(dataDir, 'litellm', 'litellm.env');
    const dry = await run(process.execPath, [BIN, 'render', '--dry-run'], { env });
    const preview = JSON.parse(dry.stdout) as { dryRun: boolean; preview: { changed: Record<string, boolean>; config: string; env: string } };
    expect(preview.dryRun).toBe(true);
    expect(preview.preview.config).toContain('model: openai/gpt-4o-mini');
    expect(preview.preview.env).toMatch(/^OPENAI_API_KEY=\*\*\*\*bbbb$/m);
    expect(dry.stdout).not.toContain('sk-import-test');
    const wrote = await run(process.execPath, [BIN, 'render'], { env });
    expect((JSON.parse(wrote.stdout) as { outcome: { status: string } }).outcome.status).toMatch(/changed|unchanged/);
    expect(readFileSync(configPath, 'utf8')).toContain('api_key: os.environ/OPENAI_API_KEY');
    expect(readFileSync(envPath, 'utf8')).toContain('OPENAI_API_KEY=sk-import-test-openai-bbbb');
    expect(statSync(envPath).mode & 0o777).toBe(0o600);
  });

  it('master-key generate prints id:base64 of 32 bytes; a bad setting is one line naming it', async () => {
    const g = await run(process.execPath, [BIN, 'master-key', 'generate']);
    const [id, b64] = g.stdout.trim().split(':');
    expect(id).toMatch(/^k\d{8}[0-9a-f]{4}$/);
    expect(Buffer.from(b64!, 'base64')).toHaveLength(32);
    const bad = await run(process.execPath, [BIN, 'migrate'], { env: { PATH: process.env.PATH!, KEYPLANE_SYNC_WAIT: 'soon', KEYPLANE_DATA_DIR: dataDir } }).catch((e) => e);
    expect(bad.code).toBe(78);
    expect(bad.stderr.trim().split('\n')).toEqual(['keyplane: KEYPLANE_SYNC_WAIT: min "soon" is not a duration such as 500ms, 30s, 5m, 1h or 7d (the form is min[:max], such as 50ms:2s)']);
  });
});
