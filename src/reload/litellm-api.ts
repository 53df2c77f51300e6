import { createHash } from 'node:crypto';
import type { Logger } from '../log';
import { MASTER_KEY_NAME } from '../key-rules';
import { scrubSecrets } from '../secret-params';
import { displayUrl } from '../url';
import type { DesiredState } from '../sync/desired-state';
import { eligibility, type Eligibility } from '../sync/eligibility';
import { LitellmApiError, LitellmClient, type CredentialView, type ModelPatch, type ModelView, type NewCredential, type NewModel } from '../litellm/client';
import type { Reloader, ReloadRequest, ReloadResult } from './reloader';

/**
 * The `litellm-api` reloader: for a LiteLLM that runs with its own database, keyplane's keys
 * become LiteLLM credentials and its models become database models that reference them, so a
 * rotated key reaches LiteLLM without a restart.
 *
 * Reading back is no help for change detection: GET /credentials masks values and GET
 * /model/info masks credential-like params (issue #28906 is what happens when a masked value is
 * written back). So every managed item carries non-secret digests of what keyplane last wrote
 * (`keyplane_digests`): a field is sent only when its digest differs, and only values from the
 * desired state are ever sent.
 */

export const CREDENTIAL_PREFIX = 'keyplane-';
export const MANAGED_DESCRIPTION = 'managed by keyplane';
const NO_DATABASE_HINT =
  'LiteLLM has no database, so its admin API cannot store credentials or models; use KEYPLANE_RELOAD=docker or KEYPLANE_RELOAD=command instead, or give LiteLLM a DATABASE_URL';


type Digests = Record<string, string>;

export interface DesiredCredential {
  name: string;
  values: Record<string, string>;
  info: Record<string, unknown>;
  digests: Digests;
}

export interface DesiredLitellmModel {
  keyplaneId: string;
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
  | { op: 'model:create'; keyplaneId: string; body: NewModel }
  | { op: 'model:update'; keyplaneId: string; id: string; patch: ModelPatch }
  | { op: 'model:recreate'; keyplaneId: string; id: string; body: NewModel }
  | { op: 'model:delete'; keyplaneId: string; id: string };

export interface Plan {
  /** Credentials first, so that models can reference them. */
  credentials: Operation[];
  models: Operation[];
  /** Last, once no managed model references them. */
  credentialDeletes: Operation[];
  /** Items keyplane must not touch (same name, not created by keyplane). */
  conflicts: string[];
}

export interface LitellmApiReloaderOptions {
  url: string;
  /** LiteLLM's master key; when unset, the rendered env's LITELLM_MASTER_KEY is used. */
  masterKey?: string;
  log: Logger;
  /** Per HTTP request; default 10 s. */
  timeoutMs?: number;
}

export class LitellmApiReloader implements Reloader {
  readonly kind = 'litellm-api' as const;
  private readonly log: Logger;
  private readonly target: string;

  constructor(private readonly opts: LitellmApiReloaderOptions) {
    this.log = opts.log.child({ component: 'reload-litellm-api' });
    this.target = displayUrl(opts.url);
  }

  async reload(req: ReloadRequest): Promise<ReloadResult> {
    const startedAt = new Date();
    const fail = (error: string): ReloadResult => {
      this.log.warn('litellm-api reload failed', { revision: req.revision, target: this.target, error });
      return { status: 'failed', error, targets: [{ target: this.target, status: 'failed', startedAt, finishedAt: new Date(), error }] };
    };
    // The stored key is found by its name, whatever env var it was given.
    const masterKey = this.opts.masterKey ?? req.state.keys.find((k) => k.name === MASTER_KEY_NAME)?.value;
    if (!masterKey) {
      return fail('no LiteLLM master key: set KEYPLANE_LITELLM_MASTER_KEY, or store the litellm_master_key platform key');
    }
    const client = new LitellmClient({ url: this.opts.url, masterKey, timeoutMs: this.opts.timeoutMs });
    try {
      const ready = await client.readiness();
      if (ready.db.toLowerCase() !== 'connected') return fail(`${NO_DATABASE_HINT} (readiness reports db "${ready.db}")`);
      const [credentials, models] = await Promise.all([client.listCredentials(), client.listModels()]);
      const plan = planReconcile(req.state, credentials, models);
      const { counts, errors } = await execute(client, plan);
      const problems = [...plan.conflicts, ...errors];
      if (problems.length) {
        const error = `${problems.length} problem(s) reconciling LiteLLM: ${problems.slice(0, 3).join('; ')}${problems.length > 3 ? '; …' : ''}`;
        return fail(error);
      }
      this.log.info('litellm-api reload done', { revision: req.revision, target: this.target, ...counts });
      return { status: 'ok', targets: [{ target: this.target, status: 'ok', startedAt, finishedAt: new Date() }] };
    } catch (err) {
      if (err instanceof LitellmApiError && err.kind === 'no-database') return fail(`${NO_DATABASE_HINT} (${err.message})`);
      return fail(err instanceof Error ? err.message : String(err));
    }
  }
}

/** Runs a plan phase by phase. A refused master key or a missing database stops it; other errors are collected. */
async function execute(client: LitellmClient, plan: Plan): Promise<{ counts: { created: number; updated: number; deleted: number }; errors: string[] }> {
  const counts = { created: 0, updated: 0, deleted: 0 };
  const errors: string[] = [];
  for (const op of [...plan.credentials, ...plan.models, ...plan.credentialDeletes]) {
    try {
      switch (op.op) {
        case 'credential:create':
          await client.createCredential(op.body);
          counts.created++;
          break;
        case 'credential:patch':
          await client.patchCredential(op.name, { credential_values: op.values, credential_info: op.info });
          counts.updated++;
          break;
        case 'credential:recreate':
          // A PATCH can add or change a value but not remove one.
          await client.deleteCredential(op.name);
          await client.createCredential(op.body);
          counts.updated++;
          break;
        case 'credential:delete':
          await client.deleteCredential(op.name);
          counts.deleted++;
          break;
        case 'model:create':
          await client.createModel(op.body);
          counts.created++;
          break;
        case 'model:update':
          await client.updateModel(op.id, op.patch);
          counts.updated++;
          break;
        case 'model:recreate':
          await client.deleteModel(op.id);
          await client.createModel(op.body);
          counts.updated++;
          break;
        case 'model:delete':
          await client.deleteModel(op.id);
          counts.deleted++;
          break;
      }
    } catch (err) {
      if (err instanceof LitellmApiError && (err.kind === 'unauthorized' || err.kind === 'no-database' || err.kind === 'unreachable' || err.kind === 'timeout')) throw err;
      errors.push(err instanceof Error ? err.message : String(err));
    }
  }
  return { counts, errors };
}

/** Compares what keyplane wants with what LiteLLM has, and lists the writes that close the gap. */
export function planReconcile(state: DesiredState, existingCredentials: CredentialView[], existingModels: ModelView[]): Plan {
  const plan: Plan = { credentials: [], models: [], credentialDeletes: [], conflicts: [] };
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
    if (!isManagedCredential(have)) {
      blocked.add(want.name);
      plan.conflicts.push(`LiteLLM already has a credential named ${want.name} that keyplane did not create; rename or delete it there`);
      continue;
    }
    const stored = digestsOf(have.credential_info);
    const { changed, removed } = diffDigests(want.digests, stored);
    if (removed.length) {
      plan.credentials.push({ op: 'credential:recreate', name: want.name, body });
      continue;
    }
    const values = Object.fromEntries(changed.map((k) => [k, want.values[k]!]));
    const info = Object.fromEntries(Object.entries(want.info).filter(([k, v]) => canonical(v) !== canonical(have.credential_info[k])));
    if (changed.length || Object.keys(info).length) plan.credentials.push({ op: 'credential:patch', name: want.name, values, info });
  }
  for (const have of existingCredentials) {
    if (isManagedCredential(have) && !wantedCredentials.has(have.credential_name)) {
      plan.credentialDeletes.push({ op: 'credential:delete', name: have.credential_name });
    }
  }

  const haveModels = new Map<string, Array<{ id: string; view: ModelView }>>();
  for (const m of existingModels) {
    const keyplaneId = m.model_info.keyplane_id;
    const id = m.model_info.id;
    if (typeof keyplaneId !== 'string' || typeof id !== 'string') continue;
    const list = haveModels.get(keyplaneId) ?? [];
    list.push({ id, view: m });
    haveModels.set(keyplaneId, list);
  }
  for (const want of wantedModels.values()) {
    // A model must not be pointed at a credential that keyplane does not own.
    if (typeof want.params.litellm_credential_name === 'string' && blocked.has(want.params.litellm_credential_name)) continue;
    const [first, ...duplicates] = haveModels.get(want.keyplaneId) ?? [];
    for (const d of duplicates) plan.models.push({ op: 'model:delete', keyplaneId: want.keyplaneId, id: d.id });
    const body = newModelBody(want);
    if (!first) {
      plan.models.push({ op: 'model:create', keyplaneId: want.keyplaneId, body });
      continue;
    }
    const { changed, removed } = diffDigests(want.digests, digestsOf(first.view.model_info));
    if (removed.length) {
      plan.models.push({ op: 'model:recreate', keyplaneId: want.keyplaneId, id: first.id, body });
      continue;
    }
    if (!changed.length) continue;
    const patch: ModelPatch = {};
    const params: Record<string, unknown> = {};
    // LiteLLM's ModelInfo fills a missing id with a fresh uuid, which the merge would store: send the current one.
    const info: Record<string, unknown> = { id: first.id, keyplane_digests: want.digests };
    for (const k of changed) {
      if (k === 'model_name') patch.model_name = want.modelName;
      else if (k.startsWith('litellm_params.')) params[k.slice('litellm_params.'.length)] = want.params[k.slice('litellm_params.'.length)];
      else if (k.startsWith('model_info.')) info[k.slice('model_info.'.length)] = want.info[k.slice('model_info.'.length)];
    }
    if (Object.keys(params).length) patch.litellm_params = params;
    patch.model_info = info;
    plan.models.push({ op: 'model:update', keyplaneId: want.keyplaneId, id: first.id, patch });
  }
  for (const [keyplaneId, list] of haveModels) {
    if (wantedModels.has(keyplaneId)) continue;
    for (const m of list) plan.models.push({ op: 'model:delete', keyplaneId, id: m.id });
  }
  return plan;
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
 * Every eligible deployment (as the renderer has them), referencing its key's credential; a model
 * without an approved, usable key is left out rather than sent anywhere without one.
 */
export function desiredModels(state: DesiredState, credentials: Map<string, DesiredCredential>, elig: Eligibility = eligibility(state)): Map<string, DesiredLitellmModel> {
  const out = new Map<string, DesiredLitellmModel>();
  for (const { model: m, provider: p, key } of elig.deployments) {
    const cred = credentials.get(credentialName(key.name));
    if (!cred) continue;
    const params: Record<string, unknown> = { model: `${p.kind}/${m.model}`, litellm_credential_name: cred.name };
    const apiBase = m.apiBase ?? p.apiBase;
    if (apiBase) params.api_base = apiBase;
    if (m.rpm != null) params.rpm = m.rpm;
    if (m.tpm != null) params.tpm = m.tpm;
    // A secret reaches LiteLLM only through a credential or an os.environ/ reference, never as a literal.
    const dropped: string[] = [];
    for (const [k, v] of Object.entries(scrubSecrets(m.litellmParams, dropped) as Record<string, unknown>)) if (!(k in params)) params[k] = v;
    const info = { ...(scrubSecrets(m.modelInfo, dropped) as Record<string, unknown>) };
    for (const k of ['id', 'keyplane_id', 'keyplane_digests']) delete info[k];
    const digests: Digests = { model_name: digest(m.modelName) };
    for (const [k, v] of Object.entries(params)) digests[`litellm_params.${k}`] = digest(v);
    for (const [k, v] of Object.entries(info)) digests[`model_info.${k}`] = digest(v);
    out.set(m.id, { keyplaneId: m.id, modelName: m.modelName, params, info, digests });
  }
  return out;
}

export function credentialName(keyName: string): string {
  return CREDENTIAL_PREFIX + keyName;
}

function newModelBody(m: DesiredLitellmModel): NewModel {
  return {
    model_name: m.modelName,
    litellm_params: m.params,
    // model_info.id becomes LiteLLM's model id, so a create that is retried cannot make a duplicate.
    model_info: { ...m.info, id: m.keyplaneId, keyplane_id: m.keyplaneId, keyplane_digests: m.digests },
  };
}

function isManagedCredential(c: CredentialView): boolean {
  return c.credential_name.startsWith(CREDENTIAL_PREFIX) && c.credential_info.keyplane_managed === true;
}

function digestsOf(info: Record<string, unknown>): Digests {
  const d = info.keyplane_digests;
  if (typeof d !== 'object' || d === null || Array.isArray(d)) return {};
  return Object.fromEntries(Object.entries(d).filter((e): e is [string, string] => typeof e[1] === 'string'));
}

function diffDigests(want: Digests, have: Digests): { changed: string[]; removed: string[] } {
  return {
    changed: Object.keys(want).filter((k) => want[k] !== have[k]),
    removed: Object.keys(have).filter((k) => !(k in want)),
  };
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
