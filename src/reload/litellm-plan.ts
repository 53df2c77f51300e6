import { createHash } from 'node:crypto';
import { scrubSecrets } from '../secret-params';
import { poolOf, type DesiredState } from '../sync/desired-state';
import { eligibility, type Eligibility } from '../sync/eligibility';
import type { CredentialView, ModelPatch, ModelView, NewCredential, NewModel } from '../litellm/client';
import type { Owned, OwnedKind } from '../litellm/litellm-state-store';
import { HIDDEN_MODEL_PARAMS, maskCredentialValues, maskModelParams } from '../litellm/masking';

/**
 * What the `litellm-api` reloader writes into LiteLLM, as a pure comparison of what keyplane wants
 * with what LiteLLM shows.
 *
 * Secrets are never read back: LiteLLM masks them (see litellm/masking.ts). Keyplane masks what it
 * wants the same way and compares masked with masked, and every managed item carries non-secret
 * digests of what keyplane last wrote (`keyplane_digests`). A field is sent when either differs,
 * and only values from the desired state are ever sent. A replaced secret can mask exactly like the
 * one it replaced, so a reconcile sends every value LiteLLM does not show in clear again.
 *
 * Only what the ledger (`litellm_owned`) says keyplane created is ever changed or deleted; items
 * that carry keyplane's marks without being in it are copies, left alone and reported.
 *
 * Pools: one credential per platform key in service, and one DB model per (model, key) under the
 * model's `model_name`, with its key's `weight` when the pool has more than one key. A DB model's
 * LiteLLM id is derived from the pair (litellmModelId), so a reconcile finds what an earlier run
 * (or a run cut short) created, a disabled key takes exactly its own models, and a key given a new
 * value changes only its credential.
 */

export const CREDENTIAL_PREFIX = 'keyplane-';
export const MANAGED_DESCRIPTION = 'managed by keyplane';

type Digests = Record<string, string>;

export interface DesiredCredential {
  name: string;
  values: Record<string, string>;
  info: Record<string, unknown>;
  digests: Digests;
}

export interface DesiredLitellmModel {
  /** LiteLLM's model id: one per (keyplane model, pool key), see litellmModelId. */
  id: string;
  /** keyplane's model id. */
  keyplaneId: string;
  /** The platform key whose credential this deployment uses. */
  keyName: string;
  /** The key's weight in its pool, also for a pool of one (see keptWeight). */
  keyWeight: number;
  modelName: string;
  params: Record<string, unknown>;
  /** The admin's own model_info fields (keyplane's markers are added on write). */
  info: Record<string, unknown>;
  digests: Digests;
}

export type Operation =
  | { op: 'credential:create'; name: string; body: NewCredential }
  | { op: 'credential:patch'; name: string; values: Record<string, string>; info: Record<string, unknown> }
  | { op: 'credential:recreate'; name: string; body: NewCredential }
  | { op: 'credential:delete'; name: string }
  | { op: 'model:create'; id: string; body: NewModel }
  | { op: 'model:update'; id: string; patch: ModelPatch }
  | { op: 'model:recreate'; id: string; body: NewModel }
  | { op: 'model:delete'; id: string };

export interface Plan {
  /** Credentials first, so that models can reference them. */
  credentials: Operation[];
  /** Creates and updates before deletes, so a model_name replaced by another deployment is never without one. */
  models: Operation[];
  /** Last, once no managed model references them. */
  credentialDeletes: Operation[];
  /** Items keyplane needs but must not touch (same name or id, not created by keyplane): the reload fails. */
  conflicts: string[];
  /** Items that carry keyplane's marks but are not keyplane's: left alone, reported. */
  copies: string[];
  /** Ledger entries whose item is gone from LiteLLM and no longer wanted. */
  forget: Array<{ kind: OwnedKind; name: string }>;
}

export interface PlanOptions {
  owned: Owned;
  /** Send again every value LiteLLM masks or hides (on a reconcile). */
  resend: boolean;
}

/** Compares what keyplane wants with what LiteLLM shows, and lists the writes that close the gap. */
export function planReconcile(state: DesiredState, existingCredentials: CredentialView[], existingModels: ModelView[], opts: PlanOptions): Plan {
  const plan: Plan = { credentials: [], models: [], credentialDeletes: [], conflicts: [], copies: [], forget: [] };
  const { owned, resend } = opts;
  const elig = eligibility(state);
  const wantedCredentials = desiredCredentials(state, elig);
  const wantedModels = desiredModels(state, wantedCredentials, elig);

  const haveCredentials = new Map(existingCredentials.map((c) => [c.credential_name, c]));
  const blocked = new Set<string>();
  for (const want of wantedCredentials.values()) {
    const have = haveCredentials.get(want.name);
    const body: NewCredential = { credential_name: want.name, credential_values: want.values, credential_info: want.info };
    if (!have) {
      plan.credentials.push({ op: 'credential:create', name: want.name, body });
      continue;
    }
    if (!owned.credentials.has(want.name)) {
      blocked.add(want.name);
      plan.conflicts.push(`LiteLLM already has a credential named ${want.name} that keyplane did not create; rename or delete it there`);
      continue;
    }
    const drift = credentialDrift(want, have, resend);
    if (drift === 'recreate') plan.credentials.push({ op: 'credential:recreate', name: want.name, body });
    else if (drift) plan.credentials.push({ op: 'credential:patch', name: want.name, ...drift });
  }
  for (const have of existingCredentials) {
    const name = have.credential_name;
    if (wantedCredentials.has(name)) continue;
    if (owned.credentials.has(name)) plan.credentialDeletes.push({ op: 'credential:delete', name });
    else if (isMarkedCredential(have)) plan.copies.push(`credential ${name} carries keyplane's marks but keyplane did not create it: left alone`);
  }
  for (const name of owned.credentials) if (!haveCredentials.has(name) && !wantedCredentials.has(name)) plan.forget.push({ kind: 'credential', name });

  const ours = new Map<string, ModelView>();
  const taken = new Set<string>();
  for (const m of existingModels) {
    const id = m.model_info.id;
    if (typeof id !== 'string') continue;
    if (owned.models.has(id)) {
      ours.set(id, m);
    } else if (wantedModels.has(id)) {
      taken.add(id);
      plan.conflicts.push(`LiteLLM already has a model with id ${id} that keyplane did not create; delete it there`);
    } else if (typeof m.model_info.keyplane_id === 'string') {
      plan.copies.push(`model ${id} (${m.model_name}) carries keyplane_id ${m.model_info.keyplane_id} but keyplane did not create it: left alone`);
    }
  }
  // How many deployments each model_name will have in LiteLLM: keyplane's, and what is not keyplane's.
  const sharing = new Map<string, number>();
  const share = (name: string): void => void sharing.set(name, (sharing.get(name) ?? 0) + 1);
  for (const w of wantedModels.values()) share(w.modelName);
  for (const m of existingModels) if (typeof m.model_info.id !== 'string' || !owned.models.has(m.model_info.id)) share(m.model_name);
  for (const wanted of wantedModels.values()) {
    // A model must not be pointed at a credential that keyplane does not own.
    if (typeof wanted.params.litellm_credential_name === 'string' && blocked.has(wanted.params.litellm_credential_name)) continue;
    if (taken.has(wanted.id)) continue;
    const have = ours.get(wanted.id);
    if (!have) {
      plan.models.push({ op: 'model:create', id: wanted.id, body: newModelBody(wanted) });
      continue;
    }
    const want = sharing.get(wanted.modelName) === 1 ? keptWeight(wanted, have) : wanted;
    const drift = modelDrift(want, have, resend);
    if (drift === 'recreate') plan.models.push({ op: 'model:recreate', id: want.id, body: newModelBody(want) });
    else if (drift) plan.models.push({ op: 'model:update', id: want.id, patch: drift });
  }
  for (const id of ours.keys()) if (!wantedModels.has(id)) plan.models.push({ op: 'model:delete', id });
  for (const id of owned.models) if (!ours.has(id) && !wantedModels.has(id)) plan.forget.push({ kind: 'model', name: id });
  return plan;
}

/**
 * What an upgrade from a keyplane without the ledger adopts, once: what carries keyplane's marks in
 * a form a copy cannot have (a name is unique, and so is a model id, which keyplane sets itself:
 * its model's id before pools, derived from the model and the key since).
 */
export function adoptable(credentials: CredentialView[], models: ModelView[]): Array<{ kind: OwnedKind; name: string }> {
  const ownId = (info: ModelView['model_info']): boolean => {
    const { id, keyplane_id: model, keyplane_key: key } = info;
    if (typeof id !== 'string' || typeof model !== 'string') return false;
    return id === model || (typeof key === 'string' && id === litellmModelId(model, key));
  };
  return [
    ...credentials.filter(isMarkedCredential).map((c) => ({ kind: 'credential' as const, name: c.credential_name })),
    ...models.filter((m) => m.model_info.db_model !== false && ownId(m.model_info)).map((m) => ({ kind: 'model' as const, name: m.model_info.id as string })),
  ];
}

/**
 * One credential per platform key that an eligible deployment uses (see eligibility: approved
 * destinations only). It holds the key alone: each model carries its own api_base, so a credential
 * never moves a key to another host.
 */
export function desiredCredentials(state: DesiredState, elig: Eligibility = eligibility(state)): Map<string, DesiredCredential> {
  const out = new Map<string, DesiredCredential>();
  const bySlug = [...elig.deployments].sort((a, b) => (a.provider.slug < b.provider.slug ? -1 : a.provider.slug > b.provider.slug ? 1 : 0));
  for (const { key, provider } of bySlug) {
    const name = credentialName(key.name);
    if (out.has(name)) continue;
    // The key's HMAC fingerprint stands for it: it changes with the value and reveals nothing.
    const digests: Digests = { api_key: key.fingerprint };
    const info = { custom_llm_provider: provider.kind, description: MANAGED_DESCRIPTION, keyplane_managed: true, keyplane_digests: digests };
    out.set(name, { name, values: { api_key: key.value }, info, digests });
  }
  return out;
}

/**
 * Every eligible deployment (as the renderer has them: one per model and key in service),
 * referencing its key's credential; a model without an approved, usable key in service is left out
 * rather than sent anywhere without one.
 */
export function desiredModels(state: DesiredState, credentials: Map<string, DesiredCredential>, elig: Eligibility = eligibility(state)): Map<string, DesiredLitellmModel> {
  const out = new Map<string, DesiredLitellmModel>();
  for (const { model: m, provider: p, key, weight } of elig.deployments) {
    const cred = credentials.get(credentialName(key.name));
    if (!cred) continue;
    const params: Record<string, unknown> = { model: `${p.kind}/${m.model}`, litellm_credential_name: cred.name };
    const apiBase = m.apiBase ?? p.apiBase;
    if (apiBase) params.api_base = apiBase;
    // As in the rendered file: the pool's weight wins over one in the admin's litellm_params.
    if (weight !== undefined) params.weight = weight;
    if (m.rpm != null) params.rpm = m.rpm;
    if (m.tpm != null) params.tpm = m.tpm;
    // A secret reaches LiteLLM only through a credential or an os.environ/ reference, never as a literal.
    const dropped: string[] = [];
    for (const [k, v] of Object.entries(scrubSecrets(m.litellmParams, dropped) as Record<string, unknown>)) if (!(k in params)) params[k] = v;
    const info = { ...(scrubSecrets(m.modelInfo, dropped) as Record<string, unknown>) };
    for (const k of ['id', 'keyplane_id', 'keyplane_key', 'keyplane_digests', 'db_model']) delete info[k];
    const keyWeight = poolOf(p).find((k) => k.name === key.name)?.weight ?? 1;
    const id = litellmModelId(m.id, key.name);
    out.set(id, { id, keyplaneId: m.id, keyName: key.name, keyWeight, modelName: m.modelName, params, info, digests: modelDigests(m.modelName, params, info) });
  }
  return out;
}

export function credentialName(keyName: string): string {
  return CREDENTIAL_PREFIX + keyName;
}

// Fixed for good: every LiteLLM model id keyplane ever created was derived under it.
const MODEL_ID_NAMESPACE = Buffer.from('02f3b83e34a844619b59d049e045c1c2', 'hex');

/**
 * LiteLLM's id for the deployment of a keyplane model that uses one key: a name-based UUID (RFC
 * 4122 version 5) of the pair, the same on every run and every keyplane, so a create that is
 * retried, or repeated after a crash, finds the model instead of making a second one.
 */
export function litellmModelId(modelId: string, keyName: string): string {
  const h = createHash('sha1').update(MODEL_ID_NAMESPACE).update(`${modelId}/${keyName}`).digest();
  h[6] = (h[6]! & 0x0f) | 0x50;
  h[8] = (h[8]! & 0x3f) | 0x80;
  const hex = h.subarray(0, 16).toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

function modelDigests(modelName: string, params: Record<string, unknown>, info: Record<string, unknown>): Digests {
  const digests: Digests = { model_name: digest(modelName) };
  for (const [k, v] of Object.entries(params)) digests[`litellm_params.${k}`] = digest(v);
  for (const [k, v] of Object.entries(info)) digests[`model_info.${k}`] = digest(v);
  return digests;
}

/**
 * For a deployment alone in its model_name (the caller checks): a weight keyplane once set stays,
 * at the key's own weight, when the pool shrinks to one key. A PATCH cannot remove a field, and
 * recreating the model (delete, then create) could leave a LiteLLM worker that polls in between
 * without it for a whole poll, at the end of a rotation say; alone, a weight changes nothing. Beside
 * other deployments it would (LiteLLM's simple-shuffle counts a missing weight as 0), so there the
 * model is recreated as the rendered file has it.
 */
function keptWeight(want: DesiredLitellmModel, have: ModelView): DesiredLitellmModel {
  if ('weight' in want.params || !('litellm_params.weight' in digestsOf(have.model_info))) return want;
  const params = { ...want.params, weight: want.keyWeight };
  return { ...want, params, digests: modelDigests(want.modelName, params, want.info) };
}

/** The PATCH that repairs a credential, `recreate` when a value must go (a PATCH only adds), or undefined. */
function credentialDrift(want: DesiredCredential, have: CredentialView, resend: boolean): { values: Record<string, string>; info: Record<string, unknown> } | 'recreate' | undefined {
  const stored = digestsOf(have.credential_info);
  const shown = have.credential_values;
  // A value keyplane does not set (an api_base added inside LiteLLM, say) would steer the key.
  if (Object.keys(shown).some((k) => !(k in want.values) && !isUnset(shown[k])) || Object.keys(stored).some((k) => !(k in want.digests))) return 'recreate';
  const masked = maskCredentialValues(want.values);
  const values: Record<string, string> = {};
  for (const [k, v] of Object.entries(want.values)) {
    const unseen = canonical(masked[k]) !== canonical(v);
    if ((resend && unseen) || stored[k] !== want.digests[k] || canonical(masked[k]) !== canonical(shown[k])) values[k] = v;
  }
  const info = Object.fromEntries(Object.entries(want.info).filter(([k, v]) => canonical(v) !== canonical(have.credential_info[k])));
  return Object.keys(values).length || Object.keys(info).length ? { values, info } : undefined;
}

/** The PATCH that repairs a model, `recreate` when a field must go, or undefined. */
function modelDrift(want: DesiredLitellmModel, have: ModelView, resend: boolean): ModelPatch | 'recreate' | undefined {
  const stored = digestsOf(have.model_info);
  const shown = have.litellm_params;
  // LiteLLM shows its own defaults (`use_in_pass_through: false`, ...); anything else keyplane did not set was added there.
  if (Object.keys(shown).some((k) => !(k in want.params) && !isUnset(shown[k])) || Object.keys(stored).some((k) => !(k in want.digests))) return 'recreate';
  const masked = maskModelParams(want.params);
  const patch: ModelPatch = {};
  let changed = false;
  if (stored.model_name !== want.digests.model_name || have.model_name !== want.modelName) {
    patch.model_name = want.modelName;
    changed = true;
  }
  const params: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(want.params)) {
    const hidden = HIDDEN_MODEL_PARAMS.has(k);
    const unseen = hidden || canonical(masked[k]) !== canonical(v);
    const differs = stored[`litellm_params.${k}`] !== want.digests[`litellm_params.${k}`] || (!hidden && canonical(masked[k]) !== canonical(shown[k]));
    if (differs || (resend && unseen)) params[k] = v;
  }
  if (Object.keys(params).length) {
    patch.litellm_params = params;
    changed = true;
  }
  // LiteLLM's ModelInfo fills a missing id with a fresh uuid, which the merge would store: send the current one.
  const markers = modelMarkers(want);
  const info: Record<string, unknown> = {};
  for (const [k, v] of Object.entries({ ...want.info, ...markers })) if (canonical(v) !== canonical(have.model_info[k])) info[k] = v;
  if (Object.keys(info).length) changed = true;
  if (!changed) return undefined;
  patch.model_info = { ...info, ...markers };
  return patch;
}

/** keyplane's marks on a DB model: its LiteLLM id, which model and key it serves, and the digests. */
function modelMarkers(m: DesiredLitellmModel): Record<string, unknown> {
  return { id: m.id, keyplane_id: m.keyplaneId, keyplane_key: m.keyName, keyplane_digests: m.digests };
}

function newModelBody(m: DesiredLitellmModel): NewModel {
  return {
    model_name: m.modelName,
    litellm_params: m.params,
    // model_info.id becomes LiteLLM's model id, so a create that is retried cannot make a duplicate.
    model_info: { ...m.info, ...modelMarkers(m) },
  };
}

function isMarkedCredential(c: CredentialView): boolean {
  return c.credential_name.startsWith(CREDENTIAL_PREFIX) && c.credential_info.keyplane_managed === true;
}

/** Nothing set: how LiteLLM shows a param it fills with a default, or a value removed. */
function isUnset(v: unknown): boolean {
  if (v === null || v === undefined || v === false || v === '' || v === 'None') return true;
  if (Array.isArray(v)) return v.length === 0;
  return typeof v === 'object' && Object.keys(v as object).length === 0;
}

function digestsOf(info: Record<string, unknown>): Digests {
  const d = info.keyplane_digests;
  if (typeof d !== 'object' || d === null || Array.isArray(d)) return {};
  return Object.fromEntries(Object.entries(d).filter((e): e is [string, string] => typeof e[1] === 'string'));
}

function digest(value: unknown): string {
  return 'sha256:' + createHash('sha256').update(canonical(value)).digest('hex').slice(0, 32);
}

/** JSON with sorted keys, so equal values always give equal digests. */
function canonical(value: unknown): string {
  if (value === undefined) return 'undefined';
  if (value === null || typeof value !== 'object') return JSON.stringify(value);
  if (Array.isArray(value)) return `[${value.map(canonical).join(',')}]`;
  const entries = Object.entries(value as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonical(v)}`).join(',')}}`;
}
