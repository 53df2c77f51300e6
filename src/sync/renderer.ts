import { createHash } from 'node:crypto';
import { MASTER_KEY_ENV, MASTER_KEY_NAME } from '../key-rules';
import { scrubSecrets } from '../secret-params';
import { trimSlashes } from '../url';
import type { BaseConfig } from './base-config';
import type { DesiredKey, DesiredModel, DesiredProvider, DesiredState } from './desired-state';
import { eligibility, holdsSecret, type KeyWarning, type SkippedDeployment } from './eligibility';
import { emitYaml } from './yaml-emitter';

export type { SkippedDeployment, SkipReason } from './eligibility';
export { MASTER_KEY_ENV, MASTER_KEY_NAME } from '../key-rules';

export interface RenderOptions {
  /** False with KEYPLANE_RELOAD=litellm-api: managed models then live in LiteLLM's database. */
  modelsInConfig: boolean;
}

export type RenderWarning =
  | { kind: 'secret_param_dropped'; model_id: string; param: string }
  | { kind: 'routing_entry_dropped'; section: 'aliases' | 'fallbacks' }
  | KeyWarning;

/**
 * The state cannot be rendered safely: LiteLLM would start without authentication. Not a bug in
 * the renderer: the message says what to change.
 */
export class RenderRefused extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'RenderRefused';
  }
}

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
  /** general_settings.master_key points at a managed key (from now on, a render without one fails). */
  usesMasterKey: boolean;
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

const CONFIG_HEADER =
  '# Rendered by keyplane: edits here are overwritten. Change the database, or KEYPLANE_BASE_CONFIG.\n' +
  '# Secrets appear only as os.environ/<VAR> references, resolved from litellm.env.\n';
const ENV_HEADER = '# Rendered by keyplane: one VAR=value line per platform key. Edits here are overwritten.\n';

export const sha256 = (text: string): string => createHash('sha256').update(text).digest('hex');


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
  return def !== undefined && trimSlashes(def) === trimSlashes(provider.apiBase) ? undefined : provider.apiBase;
}

function deployment(model: DesiredModel, provider: DesiredProvider, key: DesiredKey, weight: number | undefined, warnings: RenderWarning[]): Record<string, unknown> {
  const params: Record<string, unknown> = { model: `${provider.kind}/${model.model}` };
  const apiBase = apiBaseFor(model, provider);
  if (apiBase) params.api_base = apiBase;
  params.api_key = `os.environ/${key.envVar}`;
  // A pool's deployments of one model share its model_name; LiteLLM's simple-shuffle balances them by weight.
  if (weight !== undefined) params.weight = weight;
  if (model.rpm !== null) params.rpm = model.rpm;
  if (model.tpm !== null) params.tpm = model.tpm;
  // A secret reaches LiteLLM only as a reference; a literal one is never written.
  const dropped: string[] = [];
  const passthrough = scrubSecrets(canonical(model.litellmParams), dropped) as Record<string, unknown>;
  for (const [k, v] of Object.entries(passthrough)) if (!Object.hasOwn(params, k)) params[k] = v;
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
  const { usableKeys, deployments, skipped, keyWarnings, secretValues } = eligibility(state);
  warnings.push(...keyWarnings);
  const keys: Record<string, KeySnapshot> = {};
  for (const k of [...state.keys].sort((a, b) => (a.name < b.name ? -1 : 1))) keys[k.name] = { env_var: k.envVar, version: k.version, fingerprint: k.fingerprint };

  // Eligible deployments come sorted by model_name, then id.
  // A pool renders a model once per key: its warnings are said once.
  const warned = new Set<string>();
  const managed = deployments.map((d) => {
    const first = !warned.has(d.model.id);
    warned.add(d.model.id);
    return deployment(d.model, d.provider, d.key, d.weight, first ? warnings : []);
  });

  const out: Record<string, unknown> = { ...base };

  const baseModels = Array.isArray(base.model_list) ? base.model_list : [];
  if (opts.modelsInConfig) out.model_list = [...baseModels, ...managed];

  // A routing name equal to a key's value would put that key into config.yaml in clear.
  const aliases = Object.fromEntries(
    Object.entries(state.routing.aliases ?? {}).filter(([alias, target]) => {
      const bad = holdsSecret(secretValues, alias, target);
      if (bad) warnings.push({ kind: 'routing_entry_dropped', section: 'aliases' });
      return !bad;
    }),
  );
  if (Object.keys(aliases).length) {
    const router = { ...asMap(base.router_settings) };
    router.model_group_alias = { ...asMap(router.model_group_alias), ...Object.fromEntries(sortedEntries(aliases)) };
    out.router_settings = router;
  }

  const fallbacks = Object.fromEntries(
    Object.entries(state.routing.fallbacks ?? {}).filter(([from, to]) => {
      const bad = holdsSecret(secretValues, from, to);
      if (bad) warnings.push({ kind: 'routing_entry_dropped', section: 'fallbacks' });
      return !bad;
    }),
  );
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
  else if (state.authRequired && !authOffOnPurpose(base)) {
    throw new RenderRefused(
      `LiteLLM's master key (platform key ${MASTER_KEY_NAME}) is gone or unusable, and without it LiteLLM would serve without authentication; ` +
        `store it again, or turn authentication off on purpose with general_settings.master_key: null in KEYPLANE_BASE_CONFIG`,
    );
  }

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
    usesMasterKey: master !== undefined,
  };
}

/** The base config names general_settings.master_key itself: null turns auth off on purpose, a value brings its own. */
export function authOffOnPurpose(base: BaseConfig): boolean {
  return Object.prototype.hasOwnProperty.call(asMap(base.general_settings), 'master_key');
}
