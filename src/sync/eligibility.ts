import { Approvals, destinationOf, isDestinationParam } from '../destinations';
import { envVarProblem, isReservedKey, keyValueProblem } from '../key-rules';
import { ENV_REF } from '../secret-params';
import { inService, poolOf, type DesiredKey, type DesiredModel, type DesiredProvider, type DesiredState } from './desired-state';

/**
 * Which deployments may be handed to LiteLLM, one rule for the renderer and the litellm-api
 * reloader: a deployment sends its provider's key (and any key its litellm_params reference) to one
 * destination, and every such pair must be approved. Whatever the API refused but a row still holds
 * (written around the API, or approved once and revoked since) is left out here, with the reason.
 */

export type SkipReason =
  | 'provider_disabled'
  | 'no_key'
  | 'key_disabled'
  | 'no_key_in_service'
  | 'unknown_provider'
  | 'reserved_key'
  | 'host_not_approved'
  | 'env_ref_not_approved'
  | 'destination_param'
  | 'holds_secret';

/** A deployment left out of `model_list`, reported in the sync status. */
export interface SkippedDeployment {
  id: string;
  model_name: string;
  provider: string;
  reason: SkipReason;
  /** The destination that was not approved, or the parameter at fault. */
  detail?: string;
  /** For a pool: the key whose deployment of this model was left out (the model is still served by others). */
  key?: string;
}

export type KeyWarning = { kind: 'unsafe_env_value'; key: string; env_var: string } | { kind: 'unsafe_env_name'; key: string; env_var: string; rule: string };

export interface EligibleDeployment {
  model: DesiredModel;
  provider: DesiredProvider;
  key: DesiredKey;
  /** Where the key goes (see destinationOf). */
  destination: string;
  /** LiteLLM's share for this deployment when the model is served by several keys of a pool. */
  weight?: number;
}

export interface Eligibility {
  /** Keys whose value and env var every reader takes literally, by name. */
  usableKeys: Map<string, DesiredKey>;
  deployments: EligibleDeployment[];
  skipped: SkippedDeployment[];
  keyWarnings: KeyWarning[];
  /** Every secret value (8+ characters), for the checks that no managed string equals one. */
  secretValues: Set<string>;
}

/** Every string anywhere in `value` (keys of mappings too). */
function* strings(value: unknown, depth = 0): Generator<string> {
  if (typeof value === 'string') yield value;
  else if (depth > 64 || value === null || typeof value !== 'object') return;
  else if (Array.isArray(value)) for (const v of value) yield* strings(v, depth + 1);
  else
    for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
      yield k;
      yield* strings(v, depth + 1);
    }
}

/** Whether any string in `values` equals a secret. Equality, not containment: a substring test would tell an operator whether a guess is part of a key. */
export function holdsSecret(secretValues: Set<string>, ...values: unknown[]): boolean {
  if (secretValues.size === 0) return false;
  for (const v of values) for (const s of strings(v)) if (secretValues.has(s)) return true;
  return false;
}

export function eligibility(state: DesiredState): Eligibility {
  const approvals = new Approvals(state.approvals);
  const usableKeys = new Map<string, DesiredKey>();
  const byEnv = new Map<string, DesiredKey>();
  const keyWarnings: KeyWarning[] = [];
  const secretValues = new Set<string>();
  const stateOf = new Map(state.keys.map((k) => [k.name, k]));
  for (const k of [...state.keys].sort((a, b) => (a.name < b.name ? -1 : 1))) {
    if (k.value.length >= 8) secretValues.add(k.value);
    // A disabled key is in neither file: LiteLLM cannot use what it is not given.
    if (!inService(k)) continue;
    const nameRule = envVarProblem(k.envVar, k.name);
    if (nameRule) keyWarnings.push({ kind: 'unsafe_env_name', key: k.name, env_var: k.envVar, rule: nameRule });
    else if (keyValueProblem(k.value)) keyWarnings.push({ kind: 'unsafe_env_value', key: k.name, env_var: k.envVar });
    else {
      usableKeys.set(k.name, k);
      byEnv.set(k.envVar, k);
    }
  }

  const providers = new Map(state.providers.map((p) => [p.slug, p]));
  const deployments: EligibleDeployment[] = [];
  const skipped: SkippedDeployment[] = [];
  const models = [...state.models].sort((a, b) => (a.modelName < b.modelName ? -1 : a.modelName > b.modelName ? 1 : a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  for (const m of models) {
    const skip = (reason: SkipReason, detail?: string): void => {
      skipped.push({ id: m.id, model_name: m.modelName, provider: m.provider, reason, ...(detail !== undefined ? { detail } : {}) });
    };
    const provider = providers.get(m.provider);
    if (!provider) {
      skip('unknown_provider');
      continue;
    }
    if (!provider.enabled) {
      skip('provider_disabled');
      continue;
    }
    // The same checks for every key of the pool: each key makes its own deployment of the model.
    const destination = destinationOf(provider.kind, m.apiBase ?? provider.apiBase);
    // A parameter that moves the request elsewhere would make the approved pair not the one LiteLLM uses
    // (`model` is always keyplane's own).
    const steering = Object.keys(m.litellmParams ?? {}).find((p) => isDestinationParam(p) && p !== 'model');
    if (steering) {
      skip('destination_param', steering);
      continue;
    }
    if (holdsSecret(secretValues, m.modelName, m.model, m.apiBase, m.litellmParams, m.modelInfo)) {
      skip('holds_secret');
      continue;
    }
    const pool = poolOf(provider);
    const served: EligibleDeployment[] = [];
    const leftOut: Array<{ reason: SkipReason; detail?: string; key: string }> = [];
    for (const pk of pool) {
      const out = (reason: SkipReason, detail?: string): void => {
        leftOut.push({ reason, key: pk.name, ...(detail !== undefined ? { detail } : {}) });
      };
      if (isReservedKey(pk.name)) {
        out('reserved_key', pk.name);
        continue;
      }
      const stored = stateOf.get(pk.name);
      if (stored && !inService(stored)) {
        out('key_disabled');
        continue;
      }
      // Without a usable key LiteLLM would call the provider with an empty one: leave it out, say why.
      const key = usableKeys.get(pk.name);
      if (!key) {
        out('no_key');
        continue;
      }
      if (!approvals.has(key.name, destination)) {
        out('host_not_approved', destination);
        continue;
      }
      const badRef = envRefProblem(m, destination, byEnv, approvals);
      if (badRef) {
        out('env_ref_not_approved', badRef);
        continue;
      }
      served.push({ model: m, provider, key, destination, ...(pool.length > 1 ? { weight: pk.weight } : {}) });
    }
    if (served.length === 0) {
      // Every key of the pool exists and is disabled: the loud case, the provider is out of keys.
      const allDisabled = leftOut.length > 0 && leftOut.every((o) => o.reason === 'key_disabled');
      const first = leftOut[0]!;
      if (allDisabled) skip('no_key_in_service', leftOut.map((o) => o.key).join(','));
      else if (pool.length === 1) skip(first.reason, first.detail);
      else skip(first.reason, first.detail ?? first.key);
      continue;
    }
    deployments.push(...served);
    for (const o of leftOut) skipped.push({ id: m.id, model_name: m.modelName, provider: m.provider, reason: o.reason, key: o.key, ...(o.detail !== undefined ? { detail: o.detail } : {}) });
  }
  return { usableKeys, deployments, skipped, keyWarnings, secretValues };
}

/**
 * LiteLLM resolves a top-level `os.environ/VAR` in litellm_params: it must name a usable platform
 * key, not a reserved one, approved for this deployment's destination. Returns the parameter at
 * fault, or undefined.
 */
function envRefProblem(m: DesiredModel, destination: string, byEnv: Map<string, DesiredKey>, approvals: Approvals): string | undefined {
  for (const [param, v] of Object.entries(m.litellmParams ?? {})) {
    if (typeof v !== 'string' || !ENV_REF.test(v)) continue;
    const key = byEnv.get(v.slice('os.environ/'.length));
    if (!key || isReservedKey(key.name) || !approvals.has(key.name, destination)) return param;
  }
  return undefined;
}
