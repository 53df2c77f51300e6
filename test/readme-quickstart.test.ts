import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { createServer } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { SETTING_NAMES } from '../src/config';

/**
 * Issue 9 item 6: the README's quick start cannot drift. Its serve command (the block marked
 * `<!-- quick-start:serve -->`) starts keyplane as the README says, and every command of the block
 * marked `<!-- quick-start -->` runs against it, in order, in one shell, each checked for exit 0
 * (`curl -f`: HTTP 2xx; `grep`: the content the README states). Substitutions, and nothing else:
 * the serve command skips its `npm ci && ` (dependencies are installed), the data dir is a temp dir
 * (`KEYPLANE_DATA_DIR`; the commands run there, so `.keyplane/...` is that dir), a free port
 * replaces 4100, and the health prober is off (it would call the real providers).
 */

jest.setTimeout(240_000);

const ROOT = path.resolve(__dirname, '..');
const README = readFileSync(path.join(ROOT, 'README.md'), 'utf8');
const SKIP_INSTALL = 'npm ci && ';
const README_ADDRESS = '127.0.0.1:4100';

/** The text of the fenced shell block that follows the line `<!-- marker -->`. */
export function markedBlock(markdown: string, marker: string): string {
  const lines = markdown.split('\n');
  const at = lines.findIndex((l) => l.trim() === `<!-- ${marker} -->`);
  if (at < 0) throw new Error(`README.md has no <!-- ${marker} --> line`);
  if (lines[at + 1]?.trim() !== '```sh') throw new Error(`<!-- ${marker} --> must be followed at once by a \`\`\`sh block`);
  const end = lines.findIndex((l, i) => i > at + 1 && l.trim() === '```');
  if (end < 0) throw new Error(`the block after <!-- ${marker} --> is not closed`);
  return lines.slice(at + 2, end).join('\n');
}

/** The block's commands: continued lines (`\` at the end) joined, blank lines and comments left out. */
export function commandsOf(block: string): string[] {
  const out: string[] = [];
  let current = '';
  for (const line of block.split('\n')) {
    if (!current && (line.trim() === '' || line.trim().startsWith('#'))) continue;
    if (line.endsWith('\\')) current += line.slice(0, -1);
    else {
      out.push(current + line);
      current = '';
    }
  }
  if (current) out.push(current);
  return out;
}

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const p = (s.address() as { port: number }).port;
      s.close(() => resolve(p));
    });
  });
}

/** Every process below `pid` (Linux /proc): what a stop must leave none of, whatever its process group. */
function descendants(pid: number): number[] {
  const parent = new Map<number, number>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      parent.set(Number(name), Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]));
    } catch {
      // gone meanwhile
    }
  }
  const out: number[] = [];
  const walk = (p: number): void => {
    for (const [child, ppid] of parent) {
      if (ppid === p) {
        out.push(child);
        walk(child);
      }
    }
  };
  walk(pid);
  return out;
}

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

/** The environment without this test run's own keyplane settings. */
function cleanEnv(): NodeJS.ProcessEnv {
  return Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('KEYPLANE_')));
}

describe('the README', () => {
  it('marks its quick start, and the parser reads it (continued lines joined, comments left out)', () => {
    expect(commandsOf('a \\\n  b\n# c\n\nd\n')).toEqual(['a   b', 'd']);
    expect(commandsOf(markedBlock(README, 'quick-start:serve'))).toHaveLength(1);
    expect(commandsOf(markedBlock(README, 'quick-start')).length).toBeGreaterThanOrEqual(10);
  });

  it('lists every setting keyplane reads, in the settings table', () => {
    const table = README.slice(README.indexOf('## Settings'), README.indexOf('## Command line'));
    for (const name of SETTING_NAMES) expect(table).toContain(`\`${name}\``);
  });

  describe('quick start, run against keyplane started by its own command', () => {
    let dir: string;
    let embeddedParent: string;
    let server: ChildProcess | undefined;
    let output = '';
    let port: number;
    let tree: number[] = [];

    beforeAll(async () => {
      // mkdtemp makes it 0700: as root (tests run as root), the README's commands must work from a
      // closed directory such as /root. The embedded Postgres then lives in KEYPLANE_EMBEDDED_PG_DIR,
      // here under a passable temp dir instead of /var/lib.
      dir = mkdtempSync(path.join(os.tmpdir(), 'kp-readme-'));
      expect(statSync(dir).mode & 0o777).toBe(0o700);
      embeddedParent = mkdtempSync(path.join(os.tmpdir(), 'kp-readme-pg-'));
      chmodSync(embeddedParent, 0o711);
      port = await freePort();
      const [serve] = commandsOf(markedBlock(README, 'quick-start:serve'));
      expect(serve!.startsWith(SKIP_INSTALL)).toBe(true);
      server = spawn('sh', ['-c', serve!.slice(SKIP_INSTALL.length)], {
        cwd: ROOT,
        detached: true,
        env: {
          ...cleanEnv(),
          KEYPLANE_DATA_DIR: path.join(dir, '.keyplane'),
          KEYPLANE_EMBEDDED_PG_DIR: path.join(embeddedParent, 'embedded'),
          KEYPLANE_LISTEN: `127.0.0.1:${port}`,
          KEYPLANE_HEALTH_SCHEDULE: 'off',
        },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      server.stdout!.on('data', (c) => (output += c));
      server.stderr!.on('data', (c) => (output += c));
      const deadline = Date.now() + 180_000;
      for (;;) {
        if (server.exitCode !== null) throw new Error(`the README's serve command exited with ${server.exitCode}:\n${output}`);
        const ready = await fetch(`http://127.0.0.1:${port}/readyz`).then((r) => r.ok, () => false);
        if (ready) break;
        if (Date.now() > deadline) throw new Error(`keyplane did not become ready:\n${output}`);
        await new Promise((r) => setTimeout(r, 200));
      }
      tree = descendants(server.pid!);
    });

    afterAll(async () => {
      // Whatever happened above: nothing of it is left running or on disk.
      if (server && server.exitCode === null && server.signalCode === null) {
        for (const pid of [server.pid!, ...descendants(server.pid!)]) if (alive(pid)) process.kill(pid, 'SIGKILL');
      }
      for (const pid of tree) if (alive(pid)) process.kill(pid, 'SIGKILL');
      rmSync(dir, { recursive: true, force: true });
      rmSync(embeddedParent, { recursive: true, force: true });
    });

    it('runs every command of the quick start: each exits 0, and LiteLLM\'s files hold what the README says', async () => {
      const block = markedBlock(README, 'quick-start');
      const commands = commandsOf(block).map((c) => c.split(README_ADDRESS).join(`127.0.0.1:${port}`));
      const script = commands.map((c, i) => `printf '\\n@@kp %s start\\n' ${i}\n${c}\nprintf '\\n@@kp %s rc %s\\n' ${i} "$?"`).join('\n');
      const sh = spawn('sh', ['-c', script], { cwd: dir, env: { PATH: process.env.PATH!, HOME: dir }, stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      sh.stdout.on('data', (c) => (out += c));
      sh.stderr.on('data', (c) => (out += c));
      const timer = setTimeout(() => sh.kill('SIGKILL'), 60_000);
      await once(sh, 'close');
      clearTimeout(timer);
      const rcs = [...out.matchAll(/^@@kp (\d+) rc (\d+)$/gm)].map((m) => [Number(m[1]), Number(m[2])]);
      expect({ ran: rcs.length, failed: rcs.filter(([, rc]) => rc !== 0).map(([i]) => commands[i!]) }).toEqual({ ran: commands.length, failed: [] });

      const outputOf = (i: number): string => out.slice(out.indexOf(`@@kp ${i} start\n`) + `@@kp ${i} start\n`.length, out.indexOf(`\n@@kp ${i} rc `));
      // The first answer of a rotation with If-Match is version 2, as the README says.
      const rotation = commands.findIndex((c) => c.includes('If-Match'));
      expect(JSON.parse(outputOf(rotation))).toMatchObject({ name: 'openrouter', env_var: 'OPENROUTER_API_KEY', version: 2, source: 'database' });

      // The key the README rotates to is the one in litellm.env (0600); config.yaml only names it.
      const keys = [...block.matchAll(/"api_key": "(sk-or-v1-[^"]+)"/g)].map((m) => m[1]!);
      const rotated = keys[keys.length - 1]!;
      const envFile = path.join(dir, '.keyplane', 'litellm', 'litellm.env');
      const config = readFileSync(path.join(dir, '.keyplane', 'litellm', 'config.yaml'), 'utf8');
      expect(readFileSync(envFile, 'utf8')).toContain(`\nOPENROUTER_API_KEY=${rotated}\n`);
      expect(statSync(envFile).mode & 0o777).toBe(0o600);
      expect(config).toContain('api_key: os.environ/OPENROUTER_API_KEY');
      for (const k of keys) expect(config).not.toContain(k);
      expect(output).not.toContain(rotated);
    });

    it('Ctrl-C stops keyplane and its Postgres', async () => {
      const cmdline = (pid: number): string => {
        try {
          return readFileSync(`/proc/${pid}/cmdline`, 'utf8');
        } catch {
          return '';
        }
      };
      expect(tree.filter((pid) => cmdline(pid).includes('postgres')).length).toBeGreaterThan(0);
      const exited = once(server!, 'exit');
      // What Ctrl-C does in a terminal: SIGINT to the foreground process group.
      process.kill(-server!.pid!, 'SIGINT');
      await exited;
      const deadline = Date.now() + 60_000;
      while (tree.some(alive) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
      expect(tree.filter(alive)).toEqual([]);
    });
  });
});
