import { isSecretField } from './log';

/** How a secret may appear in LiteLLM's config: a reference to an environment variable. */
export const ENV_REF = /^os\.environ\/[A-Za-z_][A-Za-z0-9_]*$/;

// LiteLLM's credential parameters: a name segment such as `key`, `secret` or `token`
// (api_key, aws_secret_access_key, aws_session_token, vertex_credentials, client_secret, ...).
const SECRET_SEGMENTS = new Set(['key', 'secret', 'token', 'password', 'passwd', 'credential', 'credentials', 'private', 'authorization']);

/** A parameter whose value would be a literal secret: named like one, and not an os.environ/ reference. */
export function isSecretParam(name: string, value: unknown): boolean {
  if (typeof value === 'number' || typeof value === 'boolean' || value === null || value === undefined) return false;
  if (typeof value === 'string' && ENV_REF.test(value)) return false;
  if (/_(name|id)$/i.test(name) && !isSecretField(name)) return false;
  return isSecretField(name) || name.toLowerCase().split(/[_-]/).some((s) => SECRET_SEGMENTS.has(s));
}

/**
 * A copy of `value` without, at any depth (say `extra_headers.Authorization`), the fields that would
 * carry a literal secret; their paths are pushed onto `dropped`.
 */
export function scrubSecrets(value: unknown, dropped: string[], at = ''): unknown {
  if (Array.isArray(value)) return value.map((v, i) => scrubSecrets(v, dropped, `${at}[${i}]`));
  if (value === null || typeof value !== 'object') return value;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
    const path = at ? `${at}.${k}` : k;
    if (isSecretParam(k, v)) dropped.push(path);
    else out[k] = scrubSecrets(v, dropped, path);
  }
  return out;
}
