import { isDestinationParam } from '../destinations';
import { parse, httpUrlProblem } from '../http/validate';
import { ValidationFailed } from '../http/errors';
import { isSecretParam } from '../secret-params';
import { modelBody } from '../features/models/models-routes';
import type { ModelInput } from '../features/models/models-service';
import { defaultKeyVars, LITELLM_PROVIDERS } from './litellm-providers';
import { envRef, pathText, type YamlPath } from './source';
import { keyNameForVar, toName, type Planner } from './planner';

/** A provider the import creates. */
export interface PlannedProvider {
  slug: string;
  kind: string;
  keyName: string;
  /** A credential's api_base: where its key goes. */
  apiBase?: string;
  at: YamlPath;
}

/** A deployment the import creates, and where each of its fields came from (for problems found when it is written). */
export interface PlannedModel {
  input: ModelInput;
  at: YamlPath;
  pathOf: (field: string) => YamlPath;
}

interface Credential {
  keyName?: string;
  apiBase?: { value: string; at: YamlPath };
  params: Record<string, unknown>;
  kind?: string;
  used: boolean;
}

// The provider kinds keyplane stores (providerBody): LiteLLM's `text-completion-openai` style is not one.
const KIND_RE = /^[a-z][a-z0-9_]{0,40}$/;
// Handled by the mapping below, not passed through as litellm_params.
const MAPPED_PARAMS = new Set(['model', 'api_key', 'api_base', 'base_url', 'litellm_credential_name', 'custom_llm_provider', 'rpm', 'tpm']);

const isMap = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);

/**
 * Reads `credential_list` and `model_list` into keys, providers and models.
 *
 * The mapping: a named credential's `api_key` becomes a platform key named after the credential
 * (or the key that already owns its env var); a deployment that names the credential
 * (`litellm_credential_name`) gets that key through a provider of its kind bound to it, the
 * credential's `api_base` as its own (unless it sets one), and the credential's other values as
 * litellm_params (secrets as `os.environ/VAR` of platform keys of their own). A deployment without
 * a key gets the one LiteLLM would take from its environment (`OPENAI_API_KEY` for openai, ...).
 * `base_url` is LiteLLM's other name for `api_base`, and `custom_llm_provider` names the kind;
 * any other parameter that steers where requests go is a problem.
 */
export function planDeployments(p: Planner): { providers: PlannedProvider[]; models: PlannedModel[] } {
  const doc = p.src?.value ?? {};
  const credentials = planCredentials(p, doc.credential_list);
  const providers: PlannedProvider[] = [];
  const models: PlannedModel[] = [];
  const list = doc.model_list;
  if (list !== undefined && list !== null && !Array.isArray(list)) p.problemAt(['model_list'], 'must be a list of deployments');
  for (const [i, entry] of (Array.isArray(list) ? list : []).entries()) {
    const model = planModel(p, entry, ['model_list', i], credentials, providers);
    if (model) models.push(model);
  }
  for (const [name, c] of credentials) if (!c.used) p.notes.push(`credential ${name}: no deployment uses it; its keys were imported`);
  return { providers, models };
}

function planCredentials(p: Planner, list: unknown): Map<string, Credential> {
  const out = new Map<string, Credential>();
  if (list === undefined || list === null) return out;
  if (!Array.isArray(list)) {
    p.problemAt(['credential_list'], 'must be a list of credentials');
    return out;
  }
  for (const [j, c] of list.entries()) {
    const at: YamlPath = ['credential_list', j];
    if (!isMap(c) || typeof c.credential_name !== 'string' || !c.credential_name) {
      p.problemAt(at, 'must be a mapping with credential_name and credential_values');
      continue;
    }
    if (!isMap(c.credential_values)) {
      p.problemAt([...at, 'credential_values'], 'must be a mapping (api_key, api_base, ...)');
      continue;
    }
    if (out.has(c.credential_name)) {
      p.problemAt([...at, 'credential_name'], `${c.credential_name} is named twice in credential_list`);
      continue;
    }
    const base = toName(c.credential_name);
    const info = isMap(c.credential_info) ? c.credential_info : {};
    const cred: Credential = { params: {}, used: false, ...(typeof info.custom_llm_provider === 'string' ? { kind: info.custom_llm_provider } : {}) };
    for (const [k, v] of Object.entries(c.credential_values)) {
      const vat: YamlPath = [...at, 'credential_values', k];
      if (k === 'api_key') cred.keyName = keyOf(p, v, vat, base, base);
      else if (k === 'api_base' || k === 'base_url') {
        const value = plainString(p, v, vat);
        const rule = value === undefined ? undefined : httpUrlProblem(value);
        if (rule) p.problemAt(vat, rule);
        else if (value !== undefined) cred.apiBase = { value, at: vat };
      } else if (isDestinationParam(k)) p.problemAt(vat, "chooses where requests and their key go: keyplane sets a destination with api_base only");
      else if (isSecretParam(k, v)) cred.params[k] = secretParam(p, v, vat, `${base}_${k}`);
      else cred.params[k] = plainValue(p, v, vat);
    }
    if (!cred.keyName) p.notes.push(`credential ${c.credential_name}: no api_key, so no key for the deployments that use it`);
    out.set(c.credential_name, cred);
  }
  return out;
}

/**
 * The platform key an `api_key` value stands for: a referenced env var's key (named after the
 * variable, or `refName`), or a new key named `base` for a value written in clear.
 */
function keyOf(p: Planner, v: unknown, at: YamlPath, base: string, refName?: string): string | undefined {
  const ref = envRef(v);
  if (ref) {
    if (ref.dollar) p.notes.push(`${pathText(at)}: \${${ref.envVar}} (which LiteLLM does not expand itself) read as os.environ/${ref.envVar}`);
    const name = p.refKey(ref.envVar, at, refName ? { name: refName } : {});
    // Not in the env file: the deployment still waits for that key (never takes another key of its kind).
    if (!name && !p.env.has(ref.envVar)) return toName(refName ?? keyNameForVar(ref.envVar));
    return name;
  }
  if (typeof v === 'string' && v) {
    return p.literalKey(v, at, base)?.name;
  }
  p.problemAt(at, 'must be a string: the key, or os.environ/VAR');
  return undefined;
}

/** A secret parameter other than api_key: `os.environ/VAR` of the platform key that holds it. */
function secretParam(p: Planner, v: unknown, at: YamlPath, base: string): unknown {
  const ref = envRef(v);
  if (ref) return p.refKey(ref.envVar, at) ? `os.environ/${ref.envVar}` : undefined;
  const param = String(at[at.length - 1]);
  if (typeof v === 'string') {
    const key = p.literalKey(v, at, base, [param.toUpperCase().replace(/-/g, '_'), toName(base).toUpperCase().replace(/-/g, '_')]);
    return key ? `os.environ/${key.envVar}` : undefined;
  }
  p.problemAt(at, 'holds a credential keyplane cannot store: only a string can be a platform key');
  return undefined;
}

/** A plain (non-secret) string: a referenced env var's value is written in. */
function plainString(p: Planner, v: unknown, at: YamlPath): string | undefined {
  const value = plainValue(p, v, at);
  if (typeof value === 'string') return value;
  if (value !== undefined) p.problemAt(at, 'must be a string');
  return undefined;
}

/**
 * A parameter that is no secret, with every `os.environ/VAR` in it (not under a secret's name)
 * replaced by the env file's value: LiteLLM's own environment is not a key store, so only platform
 * keys may stay references.
 */
function plainValue(p: Planner, v: unknown, at: YamlPath): unknown {
  const ref = envRef(v);
  if (ref) {
    const entry = p.env.get(ref.envVar);
    if (!entry) {
      p.problemAt(at, `references ${ref.envVar}, which is not in the env file: write the value here`);
      return undefined;
    }
    p.usedEnv.add(ref.envVar);
    p.notes.push(`${pathText(at)}: the value of ${ref.envVar} written in (not a secret)`);
    return entry.value;
  }
  if (Array.isArray(v)) return v.map((x, i) => plainValue(p, x, [...at, i]));
  if (isMap(v)) return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, isSecretParam(k, x) ? x : plainValue(p, x, [...at, k])]));
  return v;
}

function planModel(p: Planner, entry: unknown, at: YamlPath, credentials: Map<string, Credential>, providers: PlannedProvider[]): PlannedModel | undefined {
  if (!isMap(entry)) {
    p.problemAt(at, 'must be a mapping with model_name and litellm_params');
    return undefined;
  }
  const lp = entry.litellm_params;
  if (!isMap(lp) || typeof lp.model !== 'string') {
    p.problemAt(isMap(lp) ? [...at, 'litellm_params', 'model'] : [...at, 'litellm_params'], 'must be a mapping with model: <provider>/<model>');
    return undefined;
  }
  const lpAt: YamlPath = [...at, 'litellm_params'];
  let cred: Credential | undefined;
  if (lp.litellm_credential_name !== undefined) {
    cred = typeof lp.litellm_credential_name === 'string' ? credentials.get(lp.litellm_credential_name) : undefined;
    if (!cred) p.problemAt([...lpAt, 'litellm_credential_name'], `names no credential of credential_list`);
    else cred.used = true;
  }
  // A bad kind is one problem; the key and parameters are still checked, so each problem is reported at once.
  const kindAndModel = kindOf(p, lp, lpAt, cred);
  const kind = kindAndModel?.kind ?? 'model';

  let keyName: string | undefined;
  if (lp.api_key !== undefined) keyName = keyOf(p, lp.api_key, [...lpAt, 'api_key'], kind.replace(/_ai$/, ''));
  else if (cred) keyName = cred.keyName;
  else if (kindAndModel) {
    const envVar = defaultKeyVars(kind).find((v) => p.env.has(v) || p.ownerOf(v));
    if (envVar) {
      keyName = p.refKey(envVar, lpAt);
      p.notes.push(`${pathText(at)}: no api_key; LiteLLM took ${envVar} from its environment, so the deployment uses platform key ${keyName}`);
    } else p.skip(`${pathText(at)} key`, at, `no api_key and no ${defaultKeyVars(kind)[0]} in the env file: imported without a key (rendered once its provider has one)`);
  }
  const reserved = keyName && p.providerKeyProblem(keyName);
  if (reserved) p.problemAt([...lpAt, 'api_key'], reserved);

  // base_url is LiteLLM's other name for api_base; the deployment's own wins over its credential's.
  const own = (['api_base', 'base_url'] as const).flatMap((name) => {
    if (lp[name] === undefined) return [];
    const value = plainString(p, lp[name], [...lpAt, name]);
    return value === undefined ? [] : [{ value, at: [...lpAt, name] as YamlPath }];
  });
  if (own.length === 2 && own[0]!.value !== own[1]!.value) p.problemAt(own[1]!.at, 'differs from api_base: LiteLLM would use one of them, keyplane cannot tell which');
  const apiBase = own[0];

  const params: Record<string, unknown> = { ...(cred?.params ?? {}) };
  for (const [k, v] of Object.entries(lp)) {
    if (MAPPED_PARAMS.has(k)) continue;
    const pat: YamlPath = [...lpAt, k];
    if (isDestinationParam(k)) p.problemAt(pat, "chooses where requests and their key go: keyplane sets a destination with api_base only (remove it, or use api_base)");
    else if (isSecretParam(k, v)) params[k] = secretParam(p, v, pat, `${keyName ?? kind}_${k}`);
    else params[k] = plainValue(p, v, pat);
  }

  if (!kindAndModel) return undefined;
  const pathOf = (field: string): YamlPath => {
    const [head, ...rest] = field.split('.');
    if (head === 'model_name') return [...at, 'model_name'];
    if (head === 'model' || head === 'rpm' || head === 'tpm') return [...lpAt, head];
    if (head === 'api_base') return apiBase?.at ?? lpAt;
    if (head === 'litellm_params') return [...lpAt, ...rest];
    if (head === 'model_info') return [...at, 'model_info', ...rest];
    return at;
  };
  // A new provider goes where its key went: the credential's api_base, else the deployment's own
  // (without one, it would approve the key for its kind's public API too).
  const slug = providerFor(p, { kind, keyName, apiBase: cred?.apiBase?.value, newBase: cred?.apiBase?.value ?? apiBase?.value }, at, providers);
  const raw = {
    model_name: entry.model_name,
    provider: slug,
    model: kindAndModel.upstream,
    ...(apiBase ? { api_base: apiBase.value } : {}),
    ...(lp.rpm != null ? { rpm: lp.rpm } : {}),
    ...(lp.tpm != null ? { tpm: lp.tpm } : {}),
    litellm_params: params,
    model_info: entry.model_info ?? {},
  };
  try {
    return { input: parse(modelBody, raw), at, pathOf };
  } catch (err) {
    if (!(err instanceof ValidationFailed)) throw err;
    for (const e of err.errors) p.problemAt(pathOf(e.field), e.rule);
    return undefined;
  }
}

/** The provider kind and upstream model id: `<kind>/<id>`, or `custom_llm_provider` (the deployment's, else its credential's). */
function kindOf(p: Planner, lp: Record<string, unknown>, lpAt: YamlPath, cred: Credential | undefined): { kind: string; upstream: string } | undefined {
  const full = lp.model as string;
  const slash = full.indexOf('/');
  const prefix = slash > 0 ? full.slice(0, slash) : undefined;
  const named = typeof lp.custom_llm_provider === 'string' ? lp.custom_llm_provider : prefix && LITELLM_PROVIDERS.has(prefix) ? undefined : cred?.kind;
  const kind = named ?? prefix;
  const at: YamlPath = [...lpAt, typeof lp.custom_llm_provider === 'string' ? 'custom_llm_provider' : 'model'];
  if (!kind) {
    p.problemAt(at, 'has no provider prefix: write <provider>/<model>, such as openai/gpt-4o-mini (keyplane stores the provider explicitly)');
    return undefined;
  }
  if (!LITELLM_PROVIDERS.has(kind)) {
    p.problemAt(at, `unknown provider prefix "${kind}": LiteLLM has no such provider (openai, anthropic, azure, bedrock, gemini, groq, openrouter, ollama, ...)`);
    return undefined;
  }
  if (!KIND_RE.test(kind)) {
    p.problemAt(at, `LiteLLM's provider ${kind} is not one keyplane stores (a provider kind is [a-z][a-z0-9_]*)`);
    return undefined;
  }
  const upstream = prefix === kind ? full.slice(slash + 1) : full;
  if (named && named !== prefix) p.notes.push(`${pathText(lpAt)}: provider ${kind} (from custom_llm_provider), model ${upstream}`);
  return { kind, upstream };
}

/**
 * The provider a deployment uses: one of its kind bound to its key (and to its credential's api_base),
 * else a new one. A deployment without a key takes any provider of its kind.
 */
function providerFor(p: Planner, want: { kind: string; keyName?: string; apiBase?: string; newBase?: string }, at: YamlPath, providers: PlannedProvider[]): string {
  const { kind, keyName, apiBase, newBase } = want;
  const match = (k: string, key: string, base: string | null | undefined): boolean => k === kind && (!keyName || key === keyName) && (apiBase === undefined || base === apiBase);
  const stored = p.existing.providers.find((x) => match(x.kind, x.key_name, x.api_base));
  if (stored) return stored.slug;
  const planned = providers.find((x) => match(x.kind, x.keyName, x.apiBase));
  if (planned) return planned.slug;
  const taken = (s: string): boolean => p.existing.providers.some((x) => x.slug === s) || providers.some((x) => x.slug === s);
  const base = keyName && !taken(toName(keyName).replace(/_/g, '-')) ? keyName : `${kind}-${keyName ?? 'nokey'}`;
  const slug = p.freeSlug(base, taken);
  providers.push({ slug, kind, keyName: keyName ?? slug, ...(newBase !== undefined ? { apiBase: newBase } : {}), at });
  return slug;
}
