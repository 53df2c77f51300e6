/**
 * How LiteLLM shows the values it considers secret, so that keyplane can mask what it wants the
 * same way and compare the two without ever reading a secret back (BerriAI/litellm, 1.81):
 * - `GET /credentials`: `_get_masked_values` (litellm_core_utils/litellm_logging.py) with its
 *   defaults: a value under a name that *contains* a sensitive word becomes first 2 + `****` +
 *   last 2 (`*****` when 4 characters or fewer); a mapping under such a name is masked the same
 *   way inside; other values are shown as they are.
 * - `GET /model/info`: `remove_sensitive_info_from_deployment` (proxy/common_utils/
 *   openai_endpoint_utils.py) drops a few credential params, then `SensitiveDataMasker.mask_dict`
 *   (litellm_core_utils/sensitive_data_masker.py) masks every value under a name with a sensitive
 *   *segment* (`api_key`, not `max_tokens`; never one with a `cost` segment) as first 4 + one `*`
 *   per hidden character + last 4 (all `*` when 8 characters or fewer), 10 levels deep.
 */

const CREDENTIAL_WORDS = ['authorization', 'token', 'key', 'secret', 'vertex_credentials', 'credentials', 'password', 'passwd'];
const CREDENTIAL_MAX_DEPTH = 20;

/** Params GET /model/info never shows (they cannot be compared; keyplane re-sends them on a reconcile). */
export const HIDDEN_MODEL_PARAMS: ReadonlySet<string> = new Set(['api_key', 'client_secret', 'vertex_credentials', 'vertex_ai_credentials', 'aws_access_key_id', 'aws_secret_access_key']);
const PARAM_SEGMENTS = new Set([
  'password', 'secret', 'key', 'token', 'auth', 'authorization', 'credential', 'credentials', 'secrets', 'passwords',
  'access', 'private', 'certificate', 'certificates', 'fingerprint', 'tenancy',
]);
const PARAM_MAX_DEPTH = 10;

export function isMaskedCredentialField(name: string): boolean {
  const lower = name.toLowerCase();
  return CREDENTIAL_WORDS.some((w) => lower.includes(w));
}

/** `credential_values` as GET /credentials shows them. */
export function maskCredentialValues(values: Record<string, unknown>, depth = 0): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(values)) out[k] = isMaskedCredentialField(k) ? maskCredentialValue(v, depth) : v;
  return out;
}

function maskCredentialValue(v: unknown, depth: number): unknown {
  if (isPlainObject(v)) return depth >= CREDENTIAL_MAX_DEPTH ? v : maskCredentialValues(v, depth + 1);
  if (typeof v !== 'string') return v;
  return v.length <= 4 ? '*****' : `${v.slice(0, 2)}****${v.slice(-2)}`;
}

/** Whether GET /model/info masks a param of this name. */
export function isMaskedParam(name: string): boolean {
  const segments = name.toLowerCase().replace(/-/g, '_').split('_');
  if (segments.includes('cost')) return false;
  return segments.some((s) => PARAM_SEGMENTS.has(s));
}

/** `litellm_params` as GET /model/info shows them (the hidden params left out). */
export function maskModelParams(params: Record<string, unknown>): Record<string, unknown> {
  const visible: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(params)) if (!HIDDEN_MODEL_PARAMS.has(k)) visible[k] = v;
  return maskDict(visible, 0);
}

function maskDict(data: Record<string, unknown>, depth: number): Record<string, unknown> {
  if (depth >= PARAM_MAX_DEPTH) return data;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(data)) {
    const sensitive = isMaskedParam(k);
    if (isPlainObject(v)) out[k] = maskDict(v, depth + 1);
    else if (Array.isArray(v)) out[k] = maskSequence(v, depth + 1, sensitive);
    else if (sensitive) out[k] = maskParamValue(v === null || v === undefined ? '' : pythonStr(v));
    else out[k] = pythonScalar(v);
  }
  return out;
}

function maskSequence(values: unknown[], depth: number, sensitive: boolean): unknown[] {
  if (depth >= PARAM_MAX_DEPTH) return values;
  return values.map((item) => {
    if (isPlainObject(item)) return maskDict(item, depth + 1);
    if (Array.isArray(item)) return maskSequence(item, depth + 1, sensitive);
    if (sensitive && typeof item === 'string') return maskParamValue(item);
    return pythonScalar(item);
  });
}

function maskParamValue(s: string): string {
  if (!s) return s;
  if (s.length <= 8) return '*'.repeat(s.length);
  return `${s.slice(0, 4)}${'*'.repeat(s.length - 8)}${s.slice(-4)}`;
}

/** Python keeps int, float, bool and str as they are and prints anything else (`None` -> "None"). */
function pythonScalar(v: unknown): unknown {
  return typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean' ? v : pythonStr(v);
}

function pythonStr(v: unknown): string {
  if (v === null || v === undefined) return 'None';
  if (typeof v === 'boolean') return v ? 'True' : 'False';
  return String(v);
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
