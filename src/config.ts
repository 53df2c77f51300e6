import { existsSync, readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import YAML from 'yaml';
import cron from 'node-cron';
import proxyaddr from 'proxy-addr';
import { formatDuration, parseDuration } from './duration';
import { trimSlashes } from './url';

export type ReloadKind = 'none' | 'command' | 'docker' | 'litellm-api';
export type DockerMode = 'restart' | 'recreate';

export interface Settings {
  databaseUrl?: string;
  dataDir: string;
  /** As root: where the embedded Postgres keeps binaries and clusters the `postgres` user could not reach where they are. */
  embeddedPgDir: string;
  listen: { host: string; port: number };
  masterKey?: string;
  masterKeyFile?: string;
  adminToken?: string;
  adminTokenFile?: string;
  jwtSecret?: string;
  jwksUrl?: string;
  jwtIssuer?: string;
  jwtAudience?: string;
  /** Addresses (IPs, CIDRs, or loopback/linklocal/uniquelocal) of proxies whose X-Forwarded-For is believed. */
  trustedProxies: string[];
  outputDir: string;
  baseConfig?: string;
  syncWait: { minMs: number; maxMs: number };
  reconcileIntervalMs: number;
  checkCommand?: string;
  reload: ReloadKind;
  reloadCommand?: string;
  /** `command` mode, several LiteLLM processes: the command runs once per target, each waited for and settled in turn. */
  reloadTargets: ReloadTarget[];
  reloadTimeoutMs: number;
  /** With two or more targets: how long each must stay ready before the next is stopped. */
  rolloutSettleMs: number;
  dockerContainers: string[];
  dockerLabel?: string;
  dockerMode: DockerMode;
  dockerHost?: string;
  /** Unset: each container's own stop timeout (compose's stop_grace_period). */
  dockerStopTimeoutS?: number;
  readyTimeoutMs: number;
  litellmUrl: string;
  litellmMasterKey?: string;
  healthSchedule: string;
  healthConcurrency: number;
  healthTimeoutMs: number;
  healthFailThreshold: number;
  healthRecoverThreshold: number;
  healthRetentionMs: number;
  /** Keys a probe disabled are probed again after `minMs`, doubling up to `maxMs` (at most 5 minutes). */
  keyRecheck: { minMs: number; maxMs: number };
  /** A key whose remaining credit falls under this fraction of its limit is alerted on (once per crossing); 0: off. */
  creditAlert: number;
  alertWebhook?: string;
  logLevel: string;
  instanceId: string;
  authMaxFailures: number;
}

/** A setting with a bad value: the message names the setting and the problem, never a secret value. */
export class ConfigError extends Error {
  constructor(readonly setting: string, problem: string) {
    super(`${setting}: ${problem}`);
    this.name = 'ConfigError';
  }
}

type Source = Record<string, string | undefined>;

interface Def<K extends keyof Settings> {
  key: K;
  env: string;
  parse: (raw: string, env: string) => Settings[K];
}

const str = (raw: string): string => raw;

function int(min: number, max: number) {
  return (raw: string, env: string): number => {
    const n = Number(raw);
    if (!Number.isInteger(n) || n < min || n > max) throw new ConfigError(env, `"${raw}" is not a whole number from ${min} to ${max}`);
    return n;
  };
}

/** A duration with a unit (see duration.ts), from `min` to `max` milliseconds: zero or absurd intervals and timeouts cannot work. */
function duration(min: number, max: number) {
  return (raw: string, env: string): number => {
    const r = parseDuration(raw);
    if ('problem' in r) throw new ConfigError(env, r.problem);
    if (r.ms < min) throw new ConfigError(env, `"${raw}" is too short: at least ${formatDuration(min)}`);
    if (r.ms > max) throw new ConfigError(env, `"${raw}" is too long: at most ${formatDuration(max)}`);
    return r.ms;
  };
}

/** Docker takes its stop timeout in whole seconds; a bare number, once read as seconds, is refused with the unit to add. */
function wholeSeconds(min: number, max: number) {
  const ms = duration(min * 1000, max * 1000);
  return (raw: string, env: string): number => {
    if (/^\d+$/.test(raw)) throw new ConfigError(env, `"${raw}" has no unit (it used to mean seconds): write ${raw}s`);
    const n = ms(raw, env);
    if (n % 1000 !== 0) throw new ConfigError(env, `"${raw}" is not a whole number of seconds`);
    return n / 1000;
  };
}

function oneOf<T extends string>(...values: T[]) {
  return (raw: string, env: string): T => {
    if (!(values as string[]).includes(raw)) throw new ConfigError(env, `"${raw}" is not one of ${values.join(', ')}`);
    return raw as T;
  };
}

function url(raw: string, env: string): string {
  try {
    const u = new URL(raw);
    if (!/^https?:$/.test(u.protocol)) throw new Error('scheme');
  } catch {
    throw new ConfigError(env, 'is not an http(s) URL');
  }
  return trimSlashes(raw);
}

export function parseListen(raw: string, env = 'KEYPLANE_LISTEN'): { host: string; port: number } {
  const m = /^(\[[^\]]+\]|[^:]+):(\d{1,5})$/.exec(raw);
  if (!m) throw new ConfigError(env, `"${raw}" is not host:port`);
  const port = Number(m[2]);
  if (port > 65535) throw new ConfigError(env, `port ${port} is above 65535`);
  return { host: m[1]!.replace(/^\[|\]$/g, ''), port };
}

const SYNC_WAIT_MAX_MS = 10 * 60_000;

/** `min[:max]`, each a duration with a unit; max defaults to 4 x min. Zero (no wait) is allowed: it is the default. */
export function parseSyncWait(raw: string, env = 'KEYPLANE_SYNC_WAIT'): { minMs: number; maxMs: number } {
  const parts = raw.split(':');
  if (parts.length > 2) throw new ConfigError(env, `"${raw}" is not min[:max] with durations such as 50ms:2s`);
  const part = (text: string, which: string): number => {
    const r = parseDuration(text);
    if ('problem' in r) throw new ConfigError(env, `${which} ${r.problem} (the form is min[:max], such as 50ms:2s)`);
    if (r.ms > SYNC_WAIT_MAX_MS) throw new ConfigError(env, `${which} "${text.trim()}" is too long: at most ${formatDuration(SYNC_WAIT_MAX_MS)}`);
    return r.ms;
  };
  const minMs = part(parts[0]!, 'min');
  const maxMs = parts[1] === undefined ? Math.min(minMs * 4, SYNC_WAIT_MAX_MS) : part(parts[1], 'max');
  if (maxMs < minMs) throw new ConfigError(env, `max ${formatDuration(maxMs)} is below min ${formatDuration(minMs)}`);
  return { minMs, maxMs };
}

const KEY_RECHECK_MAX_MS = 5 * 60_000;

/** `min[:max]` durations of 100ms..5m; max defaults to 5m (the "at most every 5 minutes"). */
export function parseKeyRecheck(raw: string, env = 'KEYPLANE_KEY_RECHECK'): { minMs: number; maxMs: number } {
  const parts = raw.split(':');
  if (parts.length > 2) throw new ConfigError(env, `"${raw}" is not min[:max] with durations such as 30s:5m`);
  const part = (text: string, which: string): number => {
    const r = parseDuration(text);
    if ('problem' in r) throw new ConfigError(env, `${which} ${r.problem} (the form is min[:max], such as 30s:5m)`);
    if (r.ms < 100) throw new ConfigError(env, `${which} "${text.trim()}" is too short: at least 100ms`);
    if (r.ms > KEY_RECHECK_MAX_MS) throw new ConfigError(env, `${which} "${text.trim()}" is too long: at most ${formatDuration(KEY_RECHECK_MAX_MS)}`);
    return r.ms;
  };
  const minMs = part(parts[0]!, 'min');
  const maxMs = parts[1] === undefined ? KEY_RECHECK_MAX_MS : part(parts[1], 'max');
  if (maxMs < minMs) throw new ConfigError(env, `max ${formatDuration(maxMs)} is below min ${formatDuration(minMs)}`);
  return { minMs, maxMs };
}

/** A fraction from 0 to below 1 (`0.1`), or a percentage (`10%`). */
function fraction(raw: string, env: string): number {
  const m = /^(\d+(?:\.\d+)?|\.\d+)(%?)$/.exec(raw);
  const n = m ? Number(m[1]) / (m[2] ? 100 : 1) : NaN;
  if (!(n >= 0 && n < 1)) throw new ConfigError(env, `"${raw}" is not a fraction from 0 to below 1 (0.1) or a percentage (10%)`);
  return n;
}

function cronExpr(raw: string, env: string): string {
  // `off`: no scheduled rounds (POST /api/v1/admin/llm/health/check still runs one).
  if (raw === 'off') return raw;
  if (!cron.validate(raw)) throw new ConfigError(env, `"${raw}" is not a cron expression (or off)`);
  return raw;
}

function list(raw: string): string[] {
  return raw.split(',').map((s) => s.trim()).filter(Boolean);
}

export interface ReloadTarget {
  name: string;
  url: string;
}

/** `name=url[,name=url...]`: a name the reload command gets as $KEYPLANE_TARGET, and where that LiteLLM answers. */
function reloadTargets(raw: string, env: string): ReloadTarget[] {
  const out: ReloadTarget[] = [];
  for (const entry of list(raw)) {
    const eq = entry.indexOf('=');
    const name = eq > 0 ? entry.slice(0, eq).trim() : '';
    if (!/^[A-Za-z0-9@._:-]{1,128}$/.test(name)) {
      throw new ConfigError(env, `"${eq > 0 ? name : entry}" is not name=url (a name of letters, digits and @._:- such as litellm@4001.service)`);
    }
    if (out.some((t) => t.name === name)) throw new ConfigError(env, `names ${name} twice`);
    out.push({ name, url: url(entry.slice(eq + 1).trim(), env) });
  }
  if (out.length === 0) throw new ConfigError(env, 'names no target (the form is name=url[,name=url...])');
  return out;
}

/** Each entry is checked the way Express will read it (proxy-addr), so a typo stops start-up instead of trusting nobody. */
function proxies(raw: string, env: string): string[] {
  const entries = list(raw);
  for (const entry of entries) {
    try {
      proxyaddr.compile(entry);
    } catch {
      throw new ConfigError(env, `"${entry}" is not an IP address, a CIDR range, or one of loopback, linklocal, uniquelocal`);
    }
  }
  return entries;
}

function adminToken(raw: string, env: string): string {
  if (raw.length < 16) throw new ConfigError(env, 'must be at least 16 characters');
  return raw;
}

/** The admin token from its file (a Docker or systemd secret), checked like KEYPLANE_ADMIN_TOKEN; the error never shows it. */
function adminTokenFromFile(file: string): string {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError('KEYPLANE_ADMIN_TOKEN_FILE', `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`);
  }
  return adminToken(text.trim(), 'KEYPLANE_ADMIN_TOKEN_FILE');
}

function d<K extends keyof Settings>(key: K, env: string, parse: Def<K>['parse']): Def<K> {
  return { key, env, parse };
}

const SECOND = 1000;
const MINUTE = 60 * SECOND;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;

const DEFS = [
  d('databaseUrl', 'KEYPLANE_DATABASE_URL', str),
  d('dataDir', 'KEYPLANE_DATA_DIR', (r) => path.resolve(r)),
  d('embeddedPgDir', 'KEYPLANE_EMBEDDED_PG_DIR', (r) => path.resolve(r)),
  d('listen', 'KEYPLANE_LISTEN', parseListen),
  d('masterKey', 'KEYPLANE_MASTER_KEY', str),
  d('masterKeyFile', 'KEYPLANE_MASTER_KEY_FILE', (r) => path.resolve(r)),
  d('adminToken', 'KEYPLANE_ADMIN_TOKEN', adminToken),
  d('adminTokenFile', 'KEYPLANE_ADMIN_TOKEN_FILE', (r) => path.resolve(r)),
  d('jwtSecret', 'KEYPLANE_JWT_SECRET', (r, env) => {
    if (r.length < 32) throw new ConfigError(env, 'must be at least 32 characters for HS256');
    return r;
  }),
  d('jwksUrl', 'KEYPLANE_JWKS_URL', url),
  d('jwtIssuer', 'KEYPLANE_JWT_ISSUER', str),
  d('jwtAudience', 'KEYPLANE_JWT_AUDIENCE', str),
  d('trustedProxies', 'KEYPLANE_TRUSTED_PROXIES', proxies),
  d('outputDir', 'KEYPLANE_OUTPUT_DIR', (r) => path.resolve(r)),
  d('baseConfig', 'KEYPLANE_BASE_CONFIG', (r) => path.resolve(r)),
  d('syncWait', 'KEYPLANE_SYNC_WAIT', parseSyncWait),
  d('reconcileIntervalMs', 'KEYPLANE_RECONCILE_INTERVAL', duration(SECOND, DAY)),
  d('checkCommand', 'KEYPLANE_CHECK_COMMAND', str),
  d('reload', 'KEYPLANE_RELOAD', oneOf<ReloadKind>('none', 'command', 'docker', 'litellm-api')),
  d('reloadCommand', 'KEYPLANE_RELOAD_COMMAND', str),
  d('reloadTargets', 'KEYPLANE_RELOAD_TARGETS', reloadTargets),
  d('rolloutSettleMs', 'KEYPLANE_ROLLOUT_SETTLE', duration(0, 10 * MINUTE)),
  d('reloadTimeoutMs', 'KEYPLANE_RELOAD_TIMEOUT', duration(SECOND, HOUR)),
  d('dockerContainers', 'KEYPLANE_DOCKER_CONTAINERS', list),
  d('dockerLabel', 'KEYPLANE_DOCKER_LABEL', str),
  d('dockerMode', 'KEYPLANE_DOCKER_MODE', oneOf<DockerMode>('restart', 'recreate')),
  d('dockerHost', 'DOCKER_HOST', str),
  d('dockerStopTimeoutS', 'KEYPLANE_DOCKER_STOP_TIMEOUT', wholeSeconds(1, 600)),
  d('readyTimeoutMs', 'KEYPLANE_READY_TIMEOUT', duration(SECOND, HOUR)),
  d('litellmUrl', 'KEYPLANE_LITELLM_URL', url),
  d('litellmMasterKey', 'KEYPLANE_LITELLM_MASTER_KEY', str),
  d('healthSchedule', 'KEYPLANE_HEALTH_SCHEDULE', cronExpr),
  d('healthConcurrency', 'KEYPLANE_HEALTH_CONCURRENCY', int(1, 1000)),
  d('healthTimeoutMs', 'KEYPLANE_HEALTH_TIMEOUT', duration(100, 5 * MINUTE)),
  d('healthFailThreshold', 'KEYPLANE_HEALTH_FAIL_THRESHOLD', int(1, 100)),
  d('healthRecoverThreshold', 'KEYPLANE_HEALTH_RECOVER_THRESHOLD', int(1, 100)),
  d('healthRetentionMs', 'KEYPLANE_HEALTH_RETENTION', duration(HOUR, 3650 * DAY)),
  d('keyRecheck', 'KEYPLANE_KEY_RECHECK', parseKeyRecheck),
  d('creditAlert', 'KEYPLANE_CREDIT_ALERT', fraction),
  // Webhook URLs (Slack-style) carry their token in the path: like every URL here, a bad one is never echoed.
  d('alertWebhook', 'KEYPLANE_ALERT_WEBHOOK', url),
  d('logLevel', 'KEYPLANE_LOG_LEVEL', oneOf('error', 'warn', 'info', 'debug')),
  d('instanceId', 'KEYPLANE_INSTANCE_ID', str),
  d('authMaxFailures', 'KEYPLANE_AUTH_MAX_FAILURES', int(1, 10_000)),
] as Def<keyof Settings>[];

export const SETTING_NAMES = DEFS.map((x) => x.env);

function defaults(): Settings {
  const dataDir = path.resolve('.keyplane');
  return {
    dataDir,
    embeddedPgDir: '/var/lib/keyplane/embedded',
    listen: { host: '127.0.0.1', port: 4100 },
    outputDir: path.join(dataDir, 'litellm'),
    syncWait: { minMs: 0, maxMs: 0 },
    reconcileIntervalMs: 5 * 60_000,
    reload: 'none',
    reloadTimeoutMs: 60_000,
    dockerContainers: [],
    trustedProxies: [],
    dockerMode: 'recreate',
    reloadTargets: [],
    // A load balancer that checks every second and wants two passes in a row has a replica back
    // within about 2-3 s; 5 s leaves room for one that checks every two seconds.
    rolloutSettleMs: 5_000,
    readyTimeoutMs: 60_000,
    litellmUrl: 'http://127.0.0.1:4000',
    healthSchedule: '*/5 * * * *',
    healthConcurrency: 20,
    healthTimeoutMs: 10_000,
    healthFailThreshold: 2,
    healthRecoverThreshold: 2,
    healthRetentionMs: 7 * 86_400_000,
    keyRecheck: { minMs: 30_000, maxMs: KEY_RECHECK_MAX_MS },
    creditAlert: 0.1,
    logLevel: 'info',
    instanceId: `${hostname()}-${process.pid}-${randomBytes(3).toString('hex')}`,
    authMaxFailures: 10,
  };
}

/** The config file's keys are the settings' names in lower case, with or without `keyplane_` (`listen` or `keyplane_listen`). */
function fileSource(file: string): Source {
  let doc: unknown;
  try {
    doc = YAML.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new ConfigError('KEYPLANE_CONFIG', `${file}: ${(err as Error).message.split('\n')[0]}`);
  }
  if (doc == null) return {};
  if (typeof doc !== 'object' || Array.isArray(doc)) throw new ConfigError('KEYPLANE_CONFIG', `${file}: must be a mapping of settings`);
  const out: Source = {};
  const known = new Map(DEFS.map((x) => [x.env.replace(/^KEYPLANE_/, '').toLowerCase(), x.env]));
  for (const [k, v] of Object.entries(doc as Record<string, unknown>)) {
    const env = known.get(k.replace(/^keyplane_/, ''));
    if (!env) throw new ConfigError('KEYPLANE_CONFIG', `${file}: unknown setting "${k}"`);
    out[env] = Array.isArray(v) ? v.join(',') : String(v);
  }
  return out;
}

/**
 * Builds the settings: defaults, then the config file (`KEYPLANE_CONFIG`), then the environment,
 * then flags (already in env form), and checks the combinations.
 */
export function loadSettings(env: Source = process.env, flags: Source = {}): Settings {
  const configFile = flags.KEYPLANE_CONFIG ?? env.KEYPLANE_CONFIG;
  const merged: Source = { ...(configFile ? fileSource(path.resolve(configFile)) : {}), ...pick(env), ...flags };
  const s = defaults();
  const dataDirRaw = merged.KEYPLANE_DATA_DIR;
  for (const def of DEFS) {
    const raw = merged[def.env];
    if (raw === undefined || raw === '') continue;
    (s as unknown as Record<string, unknown>)[def.key] = def.parse(raw.trim(), def.env);
  }
  if (dataDirRaw && !merged.KEYPLANE_OUTPUT_DIR) s.outputDir = path.join(s.dataDir, 'litellm');
  // systemd's `LoadCredential=master_key:FILE` hands the keyring over in $CREDENTIALS_DIRECTORY.
  const credentials = env.CREDENTIALS_DIRECTORY;
  if (!s.masterKey && !s.masterKeyFile && credentials && existsSync(path.join(credentials, 'master_key'))) s.masterKeyFile = path.join(credentials, 'master_key');
  validate(s);
  if (s.adminTokenFile) s.adminToken = adminTokenFromFile(s.adminTokenFile);
  return s;
}

function pick(env: Source): Source {
  const out: Source = {};
  for (const name of SETTING_NAMES) if (env[name] !== undefined) out[name] = env[name];
  return out;
}

function validate(s: Settings): void {
  if (s.masterKey && s.masterKeyFile) throw new ConfigError('KEYPLANE_MASTER_KEY_FILE', 'set either KEYPLANE_MASTER_KEY or KEYPLANE_MASTER_KEY_FILE, not both');
  if (s.adminToken && s.adminTokenFile) throw new ConfigError('KEYPLANE_ADMIN_TOKEN_FILE', 'set either KEYPLANE_ADMIN_TOKEN or KEYPLANE_ADMIN_TOKEN_FILE, not both');
  if (s.jwtSecret && s.jwksUrl) throw new ConfigError('KEYPLANE_JWKS_URL', 'set either KEYPLANE_JWT_SECRET or KEYPLANE_JWKS_URL, not both');
  // A JWKS usually belongs to an identity provider that signs tokens for many applications: without
  // both checks, a token it issued for any of them would be accepted here.
  if (s.jwksUrl && !s.jwtIssuer) throw new ConfigError('KEYPLANE_JWT_ISSUER', 'is required with KEYPLANE_JWKS_URL');
  if (s.jwksUrl && !s.jwtAudience) throw new ConfigError('KEYPLANE_JWT_AUDIENCE', 'is required with KEYPLANE_JWKS_URL');
  if (s.reload === 'command' && !s.reloadCommand) throw new ConfigError('KEYPLANE_RELOAD_COMMAND', 'is required when KEYPLANE_RELOAD=command');
  if (s.reloadTargets.length && s.reload !== 'command') throw new ConfigError('KEYPLANE_RELOAD_TARGETS', 'is for KEYPLANE_RELOAD=command (Docker finds its targets by KEYPLANE_DOCKER_CONTAINERS or KEYPLANE_DOCKER_LABEL)');
  if (s.reload === 'docker' && s.dockerContainers.length === 0 && !s.dockerLabel) {
    throw new ConfigError('KEYPLANE_DOCKER_CONTAINERS', 'KEYPLANE_RELOAD=docker needs KEYPLANE_DOCKER_CONTAINERS or KEYPLANE_DOCKER_LABEL');
  }
}
