/**
 * Where a platform key is sent. A deployment sends its provider's key to the model's api_base, or
 * the provider's, or LiteLLM's default for the provider's kind; the prober and `validate` send it to
 * the provider's. Each such (key, destination) pair must have been approved by an admin
 * (`key_destinations`): an operator cannot make keyplane or LiteLLM send an existing key elsewhere.
 */

export type ProbeStyle = 'openai' | 'openrouter' | 'anthropic' | 'gemini' | 'azure' | 'ollama';

/** The public API base per provider kind: where LiteLLM and the prober go when no api_base is set. */
export const KIND_DEFAULTS: Readonly<Record<string, { base: string; style: ProbeStyle }>> = {
  openai: { base: 'https://api.openai.com/v1', style: 'openai' },
  openrouter: { base: 'https://openrouter.ai/api/v1', style: 'openrouter' },
  groq: { base: 'https://api.groq.com/openai/v1', style: 'openai' },
  together_ai: { base: 'https://api.together.xyz/v1', style: 'openai' },
  fireworks_ai: { base: 'https://api.fireworks.ai/inference/v1', style: 'openai' },
  mistral: { base: 'https://api.mistral.ai/v1', style: 'openai' },
  deepseek: { base: 'https://api.deepseek.com', style: 'openai' },
  xai: { base: 'https://api.x.ai/v1', style: 'openai' },
  anthropic: { base: 'https://api.anthropic.com', style: 'anthropic' },
  gemini: { base: 'https://generativelanguage.googleapis.com/v1beta', style: 'gemini' },
  ollama: { base: 'http://127.0.0.1:11434', style: 'ollama' },
};

/** `https://Host:443/v1` -> `https://host`; undefined for anything but an http(s) URL. */
export function originOf(url: string): string | undefined {
  try {
    const u = new URL(url);
    return u.protocol === 'http:' || u.protocol === 'https:' ? u.origin : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The destination a key goes to for `kind` at `apiBase`: the URL's origin (scheme, host, port: the
 * path does not change who receives the key), or, with no api_base and a kind keyplane does not
 * know, `litellm-default:<kind>` (wherever LiteLLM sends that kind by default).
 */
export function destinationOf(kind: string, apiBase: string | null | undefined): string {
  const base = apiBase ?? KIND_DEFAULTS[kind]?.base;
  if (!base) return `litellm-default:${kind}`;
  return originOf(base) ?? 'invalid-url';
}

/** A destination as the API takes it: an http(s) origin (no path, query or credentials), or `litellm-default:<kind>`. Undefined when it is neither. */
export function normalizeDestination(raw: string): string | undefined {
  if (raw.startsWith('litellm-default:')) {
    return /^[a-z][a-z0-9_]{0,40}$/.test(raw.slice('litellm-default:'.length)) ? raw : undefined;
  }
  if (!/^[\x21-\x7e]{1,300}$/.test(raw)) return undefined;
  try {
    const u = new URL(raw);
    const bare = u.pathname === '/' && !u.search && !u.hash && !u.username && !u.password;
    return bare && (u.protocol === 'http:' || u.protocol === 'https:') ? u.origin : undefined;
  } catch {
    return undefined;
  }
}

export interface Approval {
  keyName: string;
  destination: string;
}

/** The approved (key, destination) pairs, for quick lookups. */
export class Approvals {
  private readonly pairs = new Set<string>();

  constructor(list: Iterable<Approval> = []) {
    for (const a of list) this.pairs.add(Approvals.id(a.keyName, a.destination));
  }

  private static id(keyName: string, destination: string): string {
    return `${keyName}\u0000${destination}`;
  }

  has(keyName: string, destination: string): boolean {
    return this.pairs.has(Approvals.id(keyName, destination));
  }
}

/** A (key, destination) pair a write would create, and the request field that makes it. */
export interface Pair extends Approval {
  field: string;
}

export interface PairInput {
  model: { apiBase: string | null; litellmParams: Record<string, unknown> };
  provider: { kind: string; apiBase: string | null; keyName: string };
  /** The field that sets the provider's key and destination, for error messages (`provider`, `key_name`). */
  providerField: string;
}

/**
 * The pairs one deployment makes: its provider's key to its destination, and every key its
 * litellm_params reference (top-level `os.environ/VAR`, which LiteLLM resolves) to the same one.
 * `keyOfEnv` maps env vars to platform key names; an unknown VAR is a problem for the caller.
 */
export function deploymentPairs(d: PairInput, keyOfEnv: ReadonlyMap<string, string>): { pairs: Pair[]; unknownRefs: Array<{ field: string; envVar: string }> } {
  const destination = destinationOf(d.provider.kind, d.model.apiBase ?? d.provider.apiBase);
  const pairs: Pair[] = [{ keyName: d.provider.keyName, destination, field: d.model.apiBase ? 'api_base' : d.providerField }];
  const unknownRefs: Array<{ field: string; envVar: string }> = [];
  for (const [param, v] of Object.entries(d.model.litellmParams ?? {})) {
    if (typeof v !== 'string' || !v.startsWith('os.environ/')) continue;
    const envVar = v.slice('os.environ/'.length);
    const keyName = keyOfEnv.get(envVar);
    if (keyName === undefined) unknownRefs.push({ field: `litellm_params.${param}`, envVar });
    else pairs.push({ keyName, destination, field: `litellm_params.${param}` });
  }
  return { pairs, unknownRefs };
}

// litellm_params that choose where a request (and its key) goes: keyplane sets the destination with
// api_base alone, so that every pair it approves is the pair LiteLLM uses.
const DESTINATION_PARAMS = new Set(['base_url', 'litellm_credential_name', 'custom_llm_provider', 'api_base', 'model']);
const DESTINATION_SEGMENTS = new Set(['url', 'uri', 'endpoint', 'host', 'hostname', 'proxy']);

/** Whether a top-level litellm_params name steers the destination (`base_url`, `aws_bedrock_runtime_endpoint`, ...). */
export function isDestinationParam(name: string): boolean {
  const lower = name.toLowerCase();
  return DESTINATION_PARAMS.has(lower) || lower.split(/[_-]/).some((s) => DESTINATION_SEGMENTS.has(s));
}
