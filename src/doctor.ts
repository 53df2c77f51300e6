import { accessSync, constants, existsSync, statSync } from 'node:fs';
import path from 'node:path';
import type Docker from 'dockerode';
import type { Settings } from './config';
import { SECRET_TABLES } from './crypto/secret-tables';
import { DecryptionError, MissingMasterKeyError, type Keyring, type StoredJwe } from './crypto/keyring';
import { resolveKeyring } from './crypto/master-key';
import { NoClusterYet, startEmbeddedPostgres, type EmbeddedDatabase } from './db/embedded';
import { loadMigrations } from './db/migrator';
import { createPool, type Pool } from './db/pool';
import { LitellmClient, LitellmApiError } from './litellm/client';
import { LitellmStateStore } from './litellm/litellm-state-store';
import { MASTER_KEY_NAME } from './key-rules';
import { createLogger, SecretRegistry } from './log';
import { createDockerClient, LABEL_PORT, LABEL_URL } from './reload/docker';
import { checkLiveliness } from './reload/liveliness';
import { loadBaseConfig } from './sync/base-config';
import { displayUrl } from './url';

/** A check that failed: what is wrong, and what to do about it. */
class Fail extends Error {
  constructor(problem: string, readonly fix: string) {
    super(problem);
  }
}

/**
 * `keyplane doctor`: one line per check, `OK   <check>: <detail>` or `FAIL <check>: <problem>;
 * fix: <what to do>`; returns the exit code (1 when any check failed). It changes nothing: no
 * migration, no directory, no key, no fingerprint key; on the embedded Postgres it uses the running
 * server's cluster, or starts the existing one for the checks and stops it again.
 */
export async function doctor(settings: Settings, out: (line: string) => void): Promise<number> {
  let failed = 0;
  const check = async (name: string, fix: string, fn: () => Promise<string> | string): Promise<boolean> => {
    try {
      out(`OK   ${name}: ${await fn()}`);
      return true;
    } catch (err) {
      failed++;
      const e = err as Error;
      out(`FAIL ${name}: ${oneLine(e.message)}; fix: ${err instanceof Fail ? err.fix : fix}`);
      return false;
    }
  };
  const skipped = (name: string, because: string): void => {
    failed++;
    out(`FAIL ${name}: not checked (${because}); fix: fix that first`);
  };
  const secrets = new SecretRegistry();
  const quiet = createLogger({ secrets, silent: true });

  let keyring: Keyring | undefined;
  await check('master key', 'set KEYPLANE_MASTER_KEY_FILE to the key file (keyplane master-key generate makes a key)', () => {
    keyring = resolveKeyring(settings, secrets, quiet, { create: false });
    const which = `${keyring.origin.source}: ${keyring.describe().join(', ')}`;
    return keyring.origin.dev ? `${which}; a development key: for production, keyplane master-key move --to FILE` : which;
  });

  let db: { pool: Pool; close: () => Promise<void> } | undefined;
  await check('database', settings.databaseUrl ? 'check KEYPLANE_DATABASE_URL and that its Postgres runs' : 'see the problem; KEYPLANE_DATABASE_URL selects another Postgres', async () => {
    const opened = await openDatabase(settings);
    db = opened;
    const { rows } = await opened.pool.query<{ v: string }>("SELECT current_setting('server_version') AS v");
    return `${opened.where}; PostgreSQL ${rows[0]!.v}`;
  });

  try {
    let schema = false;
    if (!db) skipped('migrations', 'no database');
    else {
      const pool = db.pool;
      schema = await check('migrations', 'keyplane migrate (keyplane serve also applies them when it starts)', () => migrationsState(pool));
    }
    if (!db || !keyring) skipped('secrets', !db ? 'no database' : 'no master key');
    else if (!schema) skipped('secrets', 'the keyplane tables are not all there');
    else {
      const [pool, ring] = [db.pool, keyring];
      await check('secrets', 'configure the master key(s) the secrets were encrypted with (KEYPLANE_MASTER_KEY_FILE)', () => decryptAll(pool, ring));
    }
    await check('output dir', 'create it for keyplane\'s user (mkdir -p, chown), or set KEYPLANE_OUTPUT_DIR', () => writableDir(settings.outputDir));
    const base = settings.baseConfig;
    if (base) await check('base config', 'fix the file, or unset KEYPLANE_BASE_CONFIG', async () => `${base}: ${Object.keys(await loadBaseConfig(base)).length} top-level key(s)`);
    await reloadChecks(settings, check, { pool: schema ? db?.pool : undefined, keyring });
  } finally {
    await db?.close();
  }
  out(failed ? `${failed} check(s) failed` : 'all checks passed');
  return failed ? 1 : 0;
}

type Check = (name: string, fix: string, fn: () => Promise<string> | string) => Promise<boolean>;

const oneLine = (s: string): string => s.split('\n').map((l) => l.trim()).filter(Boolean).join(' ');

async function openDatabase(settings: Settings): Promise<{ pool: Pool; where: string; close: () => Promise<void> }> {
  let embedded: EmbeddedDatabase | undefined;
  let url = settings.databaseUrl;
  let where = url ? displayUrl(url) : '';
  if (!url) {
    try {
      embedded = await startEmbeddedPostgres(settings.dataDir, createLogger({ secrets: new SecretRegistry(), silent: true }), {
        share: true,
        readOnly: true,
        runtimeDir: settings.embeddedPgDir,
      });
    } catch (err) {
      if (err instanceof NoClusterYet) throw new Fail(err.message, 'start keyplane once (keyplane serve), which creates it; or set KEYPLANE_DATABASE_URL');
      throw err;
    }
    url = embedded.url;
    where = embedded.shared
      ? `the embedded Postgres of the running keyplane (postmaster ${embedded.pid}, 127.0.0.1:${embedded.port})`
      : `the embedded Postgres in ${path.join(settings.dataDir, 'pg')} (started for these checks, stopped after)`;
  }
  const pool = createPool(url, { max: 2, applicationName: `keyplane-doctor:${settings.instanceId}` });
  const close = async (): Promise<void> => {
    await pool.end();
    await embedded?.stop();
  };
  try {
    await pool.query('SELECT 1');
  } catch (err) {
    await close();
    throw err;
  }
  return { pool, where, close };
}

/** Reads which migrations were applied; applies none. Resolves when all are, else throws what is off. */
async function migrationsState(pool: Pool): Promise<string> {
  const known = loadMigrations();
  const { rows: exists } = await pool.query<{ t: string | null }>("SELECT to_regclass('keyplane_migrations')::text AS t");
  if (!exists[0]?.t) throw new Fail(`the database has no keyplane tables yet (${known.length} migrations pending)`, 'keyplane migrate, or start keyplane serve, which applies them');
  const { rows } = await pool.query<{ id: number; name: string; checksum: string }>('SELECT id, name, checksum FROM keyplane_migrations ORDER BY id');
  const applied = new Map(rows.map((r) => [r.id, r]));
  const changed = known.filter((m) => applied.has(m.id) && applied.get(m.id)!.checksum !== m.checksum).map((m) => m.name);
  if (changed.length) throw new Fail(`${changed.join(', ')} changed after it was applied`, 'restore the original migration file: an applied migration is never edited');
  const newer = rows.filter((r) => !known.some((m) => m.id === r.id)).map((r) => r.name);
  if (newer.length) throw new Fail(`the database has migrations this keyplane does not know (${newer.join(', ')})`, 'run the keyplane version that applied them, or a newer one');
  const pending = known.filter((m) => !applied.has(m.id)).map((m) => m.name);
  if (pending.length) throw new Fail(`${pending.length} pending: ${pending.join(', ')}`, 'keyplane migrate (keyplane serve also applies them when it starts)');
  return `all ${known.length} applied (latest ${known[known.length - 1]?.name ?? 'none'})`;
}

/** Decrypts every stored secret (values stay in memory); names the key ids missing and the secrets that do not decrypt. */
async function decryptAll(pool: Pool, keyring: Keyring): Promise<string> {
  let total = 0;
  const missing = new Set<string>();
  const wrong: string[] = [];
  const byKid = new Map<string, number>();
  for (const t of SECRET_TABLES) {
    const { rows } = await pool.query<Record<string, unknown> & { jwe: StoredJwe; kid: string }>(`SELECT ${t.keys.join(', ')}, jwe, kid FROM ${t.table}`);
    for (const row of rows) {
      total++;
      try {
        await keyring.decrypt(row.jwe, t.ref(row));
        byKid.set(row.kid, (byKid.get(row.kid) ?? 0) + 1);
      } catch (err) {
        if (err instanceof MissingMasterKeyError) missing.add(row.kid);
        else if (err instanceof DecryptionError) wrong.push(`${t.ref(row)} (key ${row.kid})`);
        else throw err;
      }
    }
  }
  const bad = total - [...byKid.values()].reduce((a, b) => a + b, 0);
  if (bad) {
    const parts = [];
    if (missing.size) parts.push(`they need master key id(s) ${[...missing].sort().join(', ')}, which the keyring does not have`);
    if (wrong.length) parts.push(`this master key does not decrypt ${wrong.slice(0, 5).join(', ')}${wrong.length > 5 ? ` and ${wrong.length - 5} more` : ''}`);
    throw new Fail(`${bad} of ${total} secret(s) do not decrypt: ${parts.join('; ')}`, 'configure the master key(s) they were encrypted with (KEYPLANE_MASTER_KEY_FILE); keyplane master-key move and rotate change keys');
  }
  if (!total) return 'none stored yet';
  return `all ${total} secret(s) decrypt (${[...byKid].map(([k, n]) => `${n} under ${k}`).join(', ')})`;
}

function writableDir(dir: string): string {
  if (existsSync(dir)) {
    if (!statSync(dir).isDirectory()) throw new Fail(`${dir} is not a directory`, 'remove it, or set KEYPLANE_OUTPUT_DIR to a directory');
    try {
      accessSync(dir, constants.W_OK | constants.X_OK);
    } catch (err) {
      throw new Fail(`${dir} is not writable (${(err as NodeJS.ErrnoException).code})`, 'make it writable for keyplane\'s user (chown or chmod), or set KEYPLANE_OUTPUT_DIR');
    }
    return `${dir} is writable`;
  }
  let parent = path.dirname(dir);
  while (!existsSync(parent)) parent = path.dirname(parent);
  if (!statSync(parent).isDirectory()) throw new Fail(`${dir} cannot be created: ${parent} is not a directory`, 'set KEYPLANE_OUTPUT_DIR to a directory path');
  try {
    accessSync(parent, constants.W_OK | constants.X_OK);
  } catch (err) {
    throw new Fail(`${dir} does not exist, and ${parent} is not writable (${(err as NodeJS.ErrnoException).code})`, `create ${dir} for keyplane's user (mkdir -p, chown), or set KEYPLANE_OUTPUT_DIR`);
  }
  return `${dir} does not exist yet; keyplane creates it (${parent} is writable)`;
}

interface ReloadDeps {
  pool?: Pool;
  keyring?: Keyring;
}

async function reloadChecks(settings: Settings, check: Check, deps: ReloadDeps): Promise<void> {
  switch (settings.reload) {
    case 'none':
      await check('reload', '', () => 'KEYPLANE_RELOAD=none: LiteLLM is not reloaded; it reads the files when it next starts');
      return;
    case 'command':
      await check('reload command', 'install it, or give its full path in KEYPLANE_RELOAD_COMMAND', () => commandProgram(settings.reloadCommand ?? ''));
      await check('litellm', 'start LiteLLM, or set KEYPLANE_LITELLM_URL to where it answers', () => live(settings.litellmUrl));
      return;
    case 'docker': {
      let urls: string[] = [];
      const engine = await check('docker engine', 'start Docker, mount its socket into keyplane\'s container, or set DOCKER_HOST', async () => {
        const client = createDockerClient(settings.dockerHost, 5_000);
        const v = await dockerCall(() => client.docker.version(), client.where);
        return `${client.where} answers (Docker ${v.Version})`;
      });
      if (!engine) return;
      const client = createDockerClient(settings.dockerHost, 5_000);
      const found = await check('docker targets', 'start LiteLLM\'s container(s), or correct KEYPLANE_DOCKER_CONTAINERS / KEYPLANE_DOCKER_LABEL', async () => {
        const t = await dockerTargets(client.docker, settings);
        urls = t.urls;
        return t.detail;
      });
      if (found) for (const u of urls) await check('litellm', 'see why LiteLLM is not live (docker logs), or label its container keyplane.litellm-url', () => live(u));
      return;
    }
    case 'litellm-api':
      await check('litellm', 'start LiteLLM, or set KEYPLANE_LITELLM_URL to where it answers', () => live(settings.litellmUrl));
      await check('litellm master key', 'set KEYPLANE_LITELLM_MASTER_KEY to the key LiteLLM runs with, or restart LiteLLM with the stored litellm_master_key', () => litellmMasterKey(settings, deps));
      return;
  }
}

const SHELL_BUILTINS = new Set([':', '.', '[', 'cd', 'command', 'echo', 'eval', 'exec', 'exit', 'export', 'false', 'kill', 'printf', 'set', 'test', 'true', 'if', 'for', 'while', 'case', '{', '(']);

/** The program the reload command runs (its first word after VAR=value assignments), found as `sh -c` would find it. */
function commandProgram(command: string): string {
  const words = command.trim().split(/\s+/);
  while (words.length && /^[A-Za-z_][A-Za-z0-9_]*=/.test(words[0]!)) words.shift();
  const prog = words[0];
  if (!prog) throw new Fail('KEYPLANE_RELOAD_COMMAND names no program', 'set KEYPLANE_RELOAD_COMMAND, e.g. systemctl try-restart litellm');
  if (SHELL_BUILTINS.has(prog)) return `${prog} is part of the shell (sh -c)`;
  if (/[^A-Za-z0-9_./+@%:,-]/.test(prog)) return `starts with shell syntax (${prog}); sh -c runs it, not checked further`;
  const candidates = prog.includes('/') ? [path.resolve(prog)] : (process.env.PATH ?? '').split(':').filter(Boolean).map((d) => path.join(d, prog));
  for (const c of candidates) {
    try {
      if (!statSync(c).isFile()) continue;
      accessSync(c, constants.X_OK);
      return `${prog} is ${c}`;
    } catch {
      // not here
    }
  }
  throw new Fail(prog.includes('/') ? `${prog} is not an executable file` : `${prog} is not in PATH (${process.env.PATH ?? ''})`, 'install it, or give its full path in KEYPLANE_RELOAD_COMMAND');
}

async function live(url: string): Promise<string> {
  const problem = await checkLiveliness(url, 3_000);
  if (problem) throw new Fail(`${displayUrl(url)}/health/liveliness: ${problem}`, 'start LiteLLM, or set KEYPLANE_LITELLM_URL to where it answers');
  return `${displayUrl(url)} is live`;
}

async function dockerCall<T>(fn: () => Promise<T>, where: string): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code === 'EACCES') throw new Fail(`no permission to use the Docker socket at ${where}`, 'give keyplane\'s user the socket\'s group (compose: group_add; systemd: SupplementaryGroups=docker)');
    throw new Fail(`cannot reach the Docker engine at ${where} (${code ?? (err as Error).message})`, 'start Docker, mount its socket into keyplane\'s container, or set DOCKER_HOST');
  }
}

async function dockerTargets(docker: Docker, settings: Settings): Promise<{ detail: string; urls: string[] }> {
  const infos: Docker.ContainerInspectInfo[] = [];
  if (settings.dockerContainers.length) {
    const missing: string[] = [];
    const stopped: string[] = [];
    for (const name of settings.dockerContainers) {
      try {
        const info = await docker.getContainer(name).inspect();
        if (info.State.Running) infos.push(info);
        else stopped.push(name);
      } catch (err) {
        if ((err as { statusCode?: number }).statusCode !== 404) throw err;
        missing.push(name);
      }
    }
    if (missing.length) throw new Fail(`no container named ${missing.join(', ')} (KEYPLANE_DOCKER_CONTAINERS)`, 'create and start LiteLLM\'s container(s), or correct KEYPLANE_DOCKER_CONTAINERS');
    if (stopped.length) throw new Fail(`${stopped.join(', ')} not running`, `start it (docker start ${stopped.join(' ')})`);
  } else {
    const label = settings.dockerLabel ?? '';
    const list = await docker.listContainers({ filters: { label: [label] } });
    if (!list.length) throw new Fail(`no running container has the label ${label} (KEYPLANE_DOCKER_LABEL)`, 'label LiteLLM\'s container(s) with it and start them, or set KEYPLANE_DOCKER_CONTAINERS');
    for (const c of list) infos.push(await docker.getContainer(c.Id).inspect());
  }
  const names = infos.map((i) => i.Name.replace(/^\//, '')).sort();
  // Where each answers, as the reloader will look (docker.ts): its URL label, the host network, or its address.
  const urls = infos.map((i) => {
    const label = i.Config.Labels?.[LABEL_URL];
    if (label) return label;
    if (i.HostConfig.NetworkMode === 'host') return settings.litellmUrl;
    const ip = Object.values(i.NetworkSettings.Networks ?? {}).find((n) => n.IPAddress)?.IPAddress;
    if (!ip) throw new Fail(`cannot tell where ${i.Name.replace(/^\//, '')} listens`, `give its container the label ${LABEL_URL}`);
    return `http://${ip}:${i.Config.Labels?.[LABEL_PORT] ?? '4000'}`;
  });
  return { detail: `${names.length} running: ${names.join(', ')}`, urls: [...new Set(urls)] };
}

/** Signs in to LiteLLM (GET /credentials) with the key the litellm-api reloader would use; records nothing. */
async function litellmMasterKey(settings: Settings, deps: ReloadDeps): Promise<string> {
  const tries: Array<{ label: string; key: string }> = [];
  if (settings.litellmMasterKey) tries.push({ label: 'KEYPLANE_LITELLM_MASTER_KEY', key: settings.litellmMasterKey });
  else {
    const { pool, keyring } = deps;
    if (!pool || !keyring) throw new Fail('not checked: no database or master key to read the stored litellm_master_key from', 'fix the database and master key checks, or set KEYPLANE_LITELLM_MASTER_KEY');
    const store = new LitellmStateStore(pool, (jwe, ref) => keyring.decrypt(jwe, ref));
    const { rows } = await pool.query<{ v: number }>('SELECT current_version AS v FROM platform_keys WHERE name = $1', [MASTER_KEY_NAME]);
    const current = rows[0]?.v;
    if (current === undefined) throw new Fail('no LiteLLM master key: KEYPLANE_LITELLM_MASTER_KEY is unset and no litellm_master_key is stored', 'set KEYPLANE_LITELLM_MASTER_KEY, or store the litellm_master_key platform key');
    const known = await store.knownMasterVersion();
    for (const v of known !== null && known !== current ? [current, known] : [current]) {
      const key = await store.masterKeyAt(v);
      if (key !== undefined) tries.push({ label: `the stored litellm_master_key (version ${v})`, key });
    }
  }
  const refused: string[] = [];
  for (const t of tries) {
    try {
      await new LitellmClient({ url: settings.litellmUrl, masterKey: t.key, timeoutMs: 5_000 }).listCredentials();
      return `LiteLLM at ${displayUrl(settings.litellmUrl)} accepts ${t.label}`;
    } catch (err) {
      if (err instanceof LitellmApiError && err.kind === 'unauthorized') refused.push(t.label);
      else if (err instanceof LitellmApiError && err.kind === 'no-database') {
        throw new Fail('LiteLLM has no database, which KEYPLANE_RELOAD=litellm-api needs', 'give LiteLLM a DATABASE_URL and STORE_MODEL_IN_DB=True, or use KEYPLANE_RELOAD=docker or command');
      } else throw err;
    }
  }
  throw new Fail(`LiteLLM at ${displayUrl(settings.litellmUrl)} refused ${refused.join(' and ')}`, 'set KEYPLANE_LITELLM_MASTER_KEY to the key LiteLLM runs with, or restart LiteLLM with the stored litellm_master_key');
}
