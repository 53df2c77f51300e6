import { createHash } from 'node:crypto';
import { scrubSecrets } from '../secret-params';
import type { BaseConfig } from './base-config';
import type { DesiredKey, DesiredModel, DesiredProvider, DesiredState } from './desired-state';
import { emitYaml } from './yaml-emitter';

export interface RenderOptions {
  /** False with KEYPLANE_RELOAD=litellm-api: managed models then live in LiteLLM's database. */
  modelsInConfig: boolean;
}

export type SkipReason = 'provider_disabled' | 'no_key' | 'unknown_provider';

/** A deployment left out of `model_list`, reported in the sync status. */
export interface SkippedDeployment {
  id: string;
  model_name: string;
  provider: string;
  reason: SkipReason;
}

export type RenderWarning =
  | { kind: 'secret_param_dropped'; model_id: string; param: string }
  | { kind: 'unsafe_env_value'; key: string; env_var: string };

/** Per platform key what identifies its value without being it. */
export interface KeySnapshot {
  env_var: string;
  version: number;
  fingerprint: string;
}

export interface Rendered {
  configYaml: string;
  envFile: string;
  /** VAR -> value, as in the env file (secrets: never log). */
  env: Record<string, string>;
  configSha256: string;
  envSha256: string;
  deployments: number;
  skipped: SkippedDeployment[];
  warnings: RenderWarning[];
  keys: Record<string, KeySnapshot>;
}

/** LiteLLM's own api_base for each kind (the values seeded in 001_init.sql); rendering one is noise. */
export const DEFAULT_API_BASES: Readonly<Record<string, string>> = {
  openai: 'https://api.openai.com/v1',
  anthropic: 'https://api.anthropic.com',
  gemini: 'https://generativelanguage.googleapis.com/v1beta',
  groq: 'https://api.groq.com/openai/v1',
  openrouter: 'https://openrouter.ai/api/v1',
  together_ai: 'https://api.together.xyz/v1',
  fireworks_ai: 'https://api.fireworks.ai/inference/v1',
};

export const MASTER_KEY_NAME = 'litellm_master_key';
export const MASTER_KEY_ENV = 'LITELLM_MASTER_KEY';

// The API already restricts values to this; a row written around the API must still not break the file.
const SAFE_ENV_VALUE = /^[!#%&(-[\]-_a-~]+$/;

const CONFIG_HEADER =
  '# Rendered by keyplane: edits here are overwritten. Change the database, or KEYPLANE_BASE_CONFIG.\n' +
  '# Secrets appear only as os.environ/<VAR> references, resolved from litellm.env.\n';
const ENV_HEADER = '# Rendered by keyplane: one VAR=value line per platform key. Edits here are overwritten.\n';

export const sha256 = (text: string): string => createHash('sha256').update(text).digest('hex');

const trimSlash = (u: string): string => u.replace(/\/+$/, '');

/** JSON values with every mapping's keys sorted, so the same data always gives the same bytes. */
function canonical(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(canonical);
  if (value === null || typeof value !== 'object') return value;
  const obj = value as Record<string, unknown>;
  const out: Record<string, unknown> = {};
  for (const k of Object.keys(obj).sort()) out[k] = canonical(obj[k]);
  return out;
}

function asMap(v: unknown): Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : {};
}

function apiBaseFor(model: DesiredModel, provider: DesiredProvider): string | undefined {
  if (model.apiBase) return model.apiBase;
  if (!provider.apiBase) return undefined;
  const def = DEFAULT_API_BASES[provider.kind];
  return def !== undefined && trimSlash(def) === trimSlash(provider.apiBase) ? undefined : provider.apiBase;
}

function deployment(model: DesiredModel, provider: DesiredProvider, key: DesiredKey, warnings: RenderWarning[]): Record<string, unknown> {
  const params: Record<string, unknown> = { model: `${provider.kind}/${model.model}` };
  const apiBase = apiBaseFor(model, provider);
  if (apiBase) params.api_base = apiBase;
  params.api_key = `os.environ/${key.envVar}`;
  if (model.rpm !== null) params.rpm = model.rpm;
  if (model.tpm !== null) params.tpm = model.tpm;
  // A secret reaches LiteLLM only as a reference; a literal one is never written.
  const dropped: string[] = [];
  const passthrough = scrubSecrets(canonical(model.litellmParams), dropped) as Record<string, unknown>;
  for (const [k, v] of Object.entries(passthrough)) if (!(k in params)) params[k] = v;
  const entry: Record<string, unknown> = { model_name: model.modelName, litellm_params: params };
  const info = scrubSecrets(canonical(model.modelInfo ?? {}), dropped, 'model_info') as Record<string, unknown>;
  if (Object.keys(info).length) entry.model_info = info;
  for (const param of dropped) warnings.push({ kind: 'secret_param_dropped', model_id: model.id, param });
  return entry;
}

function sortedEntries<T>(obj: Record<string, T>): Array<[string, T]> {
  return Object.entries(obj).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
}

/**
 * Desired state + base config -> the bytes of `config.yaml` and `litellm.env`. Pure: the same
 * input always gives the same bytes; no I/O, no clock.
 */
export function render(state: DesiredState, base: BaseConfig, opts: RenderOptions): Rendered {
  const warnings: RenderWarning[] = [];
  const skipped: SkippedDeployment[] = [];

  const usableKeys = new Map<string, DesiredKey>();
  const keys: Record<string, KeySnapshot> = {};
  for (const k of [...state.keys].sort((a, b) => (a.name < b.name ? -1 : 1))) {
    keys[k.name] = { env_var: k.envVar, version: k.version, fingerprint: k.fingerprint };
    if (SAFE_ENV_VALUE.test(k.value)) usableKeys.set(k.name, k);
    else warnings.push({ kind: 'unsafe_env_value', key: k.name, env_var: k.envVar });
  }

  const providers = new Map(state.providers.map((p) => [p.slug, p]));
  const byName = (a: DesiredModel, b: DesiredModel): number =>
    a.modelName < b.modelName ? -1 : a.modelName > b.modelName ? 1 : a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
  const models = [...state.models].sort(byName);
  const managed: Array<Record<string, unknown>> = [];
  for (const m of models) {
    const provider = providers.get(m.provider);
    const key = provider ? usableKeys.get(provider.keyName) : undefined;
    // Without an active key LiteLLM would call the provider with an empty one: leave it out, say why.
    if (!provider || !provider.enabled || !key) {
      const reason: SkipReason = !provider ? 'unknown_provider' : !provider.enabled ? 'provider_disabled' : 'no_key';
      skipped.push({ id: m.id, model_name: m.modelName, provider: m.provider, reason });
      continue;
    }
    managed.push(deployment(m, provider, key, warnings));
  }

  const out: Record<string, unknown> = { ...base };

  const baseModels = Array.isArray(base.model_list) ? base.model_list : [];
  if (opts.modelsInConfig) out.model_list = [...baseModels, ...managed];

  const aliases = state.routing.aliases ?? {};
  if (Object.keys(aliases).length) {
    const router = { ...asMap(base.router_settings) };
    router.model_group_alias = { ...asMap(router.model_group_alias), ...Object.fromEntries(sortedEntries(aliases)) };
    out.router_settings = router;
  }

  const fallbacks = state.routing.fallbacks ?? {};
  if (Object.keys(fallbacks).length) {
    const settings = { ...asMap(base.litellm_settings) };
    const own = Array.isArray(settings.fallbacks) ? (settings.fallbacks as unknown[]) : [];
    // A base entry for a model group keyplane also routes is replaced, not duplicated.
    const kept = own.filter((e) => !Object.keys(asMap(e)).some((k) => k in fallbacks));
    settings.fallbacks = [...kept, ...sortedEntries(fallbacks).map(([from, to]) => ({ [from]: [...to] }))];
    out.litellm_settings = settings;
  }

  const master = usableKeys.get(MASTER_KEY_NAME) ?? [...usableKeys.values()].find((k) => k.envVar === MASTER_KEY_ENV);
  if (master) out.general_settings = { ...asMap(base.general_settings), master_key: `os.environ/${master.envVar}` };

  const env: Record<string, string> = {};
  for (const k of [...usableKeys.values()].sort((a, b) => (a.envVar < b.envVar ? -1 : 1))) env[k.envVar] = k.value;
  const envFile = ENV_HEADER + Object.entries(env).map(([name, value]) => `${name}=${value}\n`).join('');
  const configYaml = CONFIG_HEADER + emitYaml(out);

  return {
    configYaml,
    envFile,
    env,
    configSha256: sha256(configYaml),
    envSha256: sha256(envFile),
    deployments: managed.length,
    skipped,
    warnings,
    keys,
  };
}
