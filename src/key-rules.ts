/**
 * What a platform key's value and env var may be. The rendered `litellm.env` is read by three
 * readers (POSIX `sh` with `set -a; . file`, systemd `EnvironmentFile=`, docker `--env-file`), and
 * LiteLLM's process takes its settings from the same environment, so both are restricted here, once,
 * for the API, the importer and the renderer.
 */

/** The reserved platform keys: LiteLLM's own secrets. Never a provider's key, never sent anywhere. */
export const MASTER_KEY_NAME = 'litellm_master_key';
export const MASTER_KEY_ENV = 'LITELLM_MASTER_KEY';
export const SALT_KEY_NAME = 'litellm_salt_key';
export const SALT_KEY_ENV = 'LITELLM_SALT_KEY';
export const RESERVED_KEYS: Readonly<Record<string, string>> = { [MASTER_KEY_NAME]: MASTER_KEY_ENV, [SALT_KEY_NAME]: SALT_KEY_ENV };
const RESERVED_ENVS = new Map(Object.entries(RESERVED_KEYS).map(([k, v]) => [v, k]));

export function isReservedKey(name: string): boolean {
  return Object.prototype.hasOwnProperty.call(RESERVED_KEYS, name);
}

/** Whether `envVar` is the env var of a reserved key (only that key may set it). */
export function isReservedEnv(envVar: string): boolean {
  return RESERVED_ENVS.has(envVar);
}

export const KEY_MIN = 8;
export const KEY_MAX = 4096;

/**
 * Characters every provider's keys use (letters, digits, `-_.`, base64's `+/=`, and `:@,` of
 * composite tokens) and that all three readers take literally, unquoted: no whitespace, quotes,
 * backslash, `$`, backquote, `;&|<>()`, glob or brace characters, `#`, `%`, `!` or `~` (tilde
 * expansion after `=` or `:` in an assignment).
 */
export const KEY_CHARS_DESCRIPTION = 'letters, digits and - _ . + / = : @ ,';
const KEY_CHAR = new Uint8Array(128);
for (const c of 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.+/=:@,') KEY_CHAR[c.charCodeAt(0)] = 1;

export function isKeyChar(code: number): boolean {
  return code < 128 && KEY_CHAR[code] === 1;
}

/** How a character is named in an error: printable ASCII as itself, anything else by code point. */
export function describeChar(ch: string): string {
  const cp = ch.codePointAt(0)!;
  const hex = `U+${cp.toString(16).toUpperCase().padStart(4, '0')}`;
  return cp > 0x20 && cp < 0x7f ? `'${ch}' (${hex})` : hex;
}

/**
 * Why `value` cannot be a key value, or undefined when it can. Names the first bad character and
 * its position (never the value itself).
 */
export function keyValueProblem(value: string): string | undefined {
  if (value.length < KEY_MIN || value.length > KEY_MAX) return `must be ${KEY_MIN} to ${KEY_MAX} characters`;
  for (let i = 0; i < value.length; i++) {
    if (!isKeyChar(value.charCodeAt(i))) {
      const ch = String.fromCodePoint(value.codePointAt(i)!);
      return `character ${describeChar(ch)} at position ${i + 1} is not allowed: a key holds only ${KEY_CHARS_DESCRIPTION}`;
    }
  }
  // A reference in place of a key would make every os.environ/ reference in config.yaml look like a leak.
  if (value.includes('os.environ/')) return 'must be the key itself, not an os.environ/ reference';
  if (value.includes('://')) return 'must be the key itself, not a URL';
  return undefined;
}

export const ENV_VAR_MAX = 128;

// Names that steer a process: the loader, the shell, proxies, paths and certificates, Python, Node,
// Prisma and LiteLLM's own settings. Matched whole, by prefix or by suffix (no regular expression).
const DENY_EXACT = new Set([
  'PATH', 'HOME', 'SHELL', 'USER', 'LOGNAME', 'PWD', 'OLDPWD', 'IFS', 'ENV', 'BASH_ENV', 'CDPATH', 'PS1', 'PS2', 'PS4',
  'TMPDIR', 'TMP', 'TEMP', 'TZ', 'TZDIR', 'LANG', 'LANGUAGE', 'TERM', 'HOSTNAME', 'MAIL', 'SHLVL', 'PROMPT_COMMAND',
  'GCONV_PATH', 'LOCPATH', 'NLSPATH', 'HOSTALIASES', 'RES_OPTIONS', 'LOCALDOMAIN', 'GLIBC_TUNABLES', 'GETCONF_DIR',
  'DATABASE_URL', 'DIRECT_URL', 'STORE_MODEL_IN_DB', 'PORT', 'HOST', 'NUM_WORKERS', 'CONFIG_FILE_PATH', 'WORKER_CONFIG',
  'UI_USERNAME', 'UI_PASSWORD', 'DISABLE_ADMIN_UI', 'SERVER_ROOT_PATH', 'PROXY_BASE_URL', 'PROXY_ADMIN_ID', 'PROXY_LOGOUT_URL',
  'USE_PRISMA_MIGRATE', 'DISABLE_SCHEMA_UPDATE', 'JWT_PUBLIC_KEY_URL', 'SSL_CERT_FILE', 'SSL_CERT_DIR', 'REQUESTS_CA_BUNDLE',
  'CURL_CA_BUNDLE', 'SSL_VERIFY', 'VIRTUAL_ENV', 'GOOGLE_APPLICATION_CREDENTIALS', 'KUBECONFIG', 'DOCKER_HOST',
  'AWS_CONFIG_FILE', 'AWS_SHARED_CREDENTIALS_FILE', 'AWS_CA_BUNDLE', 'AWS_PROFILE', 'AWS_WEB_IDENTITY_TOKEN_FILE', 'AWS_ROLE_ARN',
  'OPENSSL_CONF', 'OPENSSL_MODULES', 'OPENSSL_ENGINES', 'MALLOC_CONF', 'MALLOC_ARENA_MAX',
]);
const DENY_PREFIX = [
  'LD_', 'DYLD_', 'LITELLM_', 'PYTHON', 'PIP_', 'UV_', 'CONDA_', 'NODE_', 'NPM_', 'PRISMA_', 'REDIS_', 'KEYPLANE_', 'LC_',
  'GIT_', 'MALLOC_', 'OTEL_', 'SSL_', 'GRPC_', 'GUNICORN_', 'UVICORN_', 'AWS_ENDPOINT_URL', 'SYSTEMD_', 'DBUS_', 'XDG_', 'BASH_FUNC_',
];
const DENY_SUFFIX = [
  '_PROXY', '_API_BASE', '_BASE_URL', '_BASE', '_ENDPOINT', '_ENDPOINT_URL', '_URL', '_URI', '_HOST', '_PORT', '_PATH',
  '_FILE', '_DIR', '_HOME', '_CA_BUNDLE', '_CERT', '_CONFIG',
];

/**
 * Why `name` cannot be a platform key's env var, or undefined when it can. `key` is the platform
 * key's name: only a reserved key may set its own reserved variable, and it must.
 */
export function envVarProblem(name: string, key?: string): string | undefined {
  if (name.length === 0 || name.length > ENV_VAR_MAX) return `must be 1 to ${ENV_VAR_MAX} characters`;
  for (let i = 0; i < name.length; i++) {
    const c = name.charCodeAt(i);
    const upper = c >= 65 && c <= 90;
    const digit = c >= 48 && c <= 57;
    if (!(upper || c === 95 || (digit && i > 0))) return 'must match ^[A-Z_][A-Z0-9_]*$';
  }
  if (key !== undefined && isReservedKey(key)) {
    return name === RESERVED_KEYS[key] ? undefined : `must be ${RESERVED_KEYS[key]}: ${key} is LiteLLM's own and always sets it`;
  }
  if (isReservedEnv(name)) return `is set only by the reserved platform key ${RESERVED_ENVS.get(name)}`;
  if (DENY_EXACT.has(name)) return 'steers the LiteLLM process (a system, loader, path or LiteLLM setting), not a provider key';
  for (const p of DENY_PREFIX) if (name.startsWith(p)) return `steers the LiteLLM process (names starting with ${p} are refused)`;
  for (const s of DENY_SUFFIX) if (name.endsWith(s)) return `steers the LiteLLM process (names ending in ${s} are refused)`;
  return undefined;
}
