import { randomBytes } from 'node:crypto';
import type { Pool, PoolClient } from '../../db/pool';
import { withTransaction } from '../../db/pool';
import { AppError, Conflict, NotFound } from '../../http/errors';
import { pageOf, type PageRequest } from '../../http/paging';
import type { RequestContext } from '../../http/principal';
import { LitellmApiError, type VirtualKeyInfo, type VirtualKeySettings as LitellmSettings } from '../../litellm/client';
import type { Logger, SecretRegistry } from '../../log';
import { appendAudit } from '../audit/audit-store';
import { LitellmProblem, type LitellmAdmin } from './litellm-admin';
import { VirtualKeysStore, type RotationRow, type VirtualKeyRow, type VirtualKeySettings } from './virtual-keys-store';

/** `active`: LiteLLM has the key; `gone`: it does not (deleted there); `unknown`: LiteLLM could not be asked; `creating`: being made. */
export type ReconciledStatus = 'active' | 'gone' | 'unknown' | 'creating';

export interface RetiringView {
  rotation_id: number;
  token: string;
  masked_key: string | null;
  delete_at: string;
  attempts: number;
  last_error: string | null;
}

/** A virtual key as the API shows it: keyplane's record, reconciled with LiteLLM. Never the key. */
export interface VirtualKeyView {
  alias: string;
  status: ReconciledStatus;
  /** LiteLLM's hash of the key: its id in LiteLLM's spend logs and admin API. */
  token: string | null;
  masked_key: string | null;
  models: string[];
  max_budget: number | null;
  budget_duration: string | null;
  rpm_limit: number | null;
  tpm_limit: number | null;
  duration: string | null;
  metadata: Record<string, unknown>;
  expires_at: string | null;
  /** From LiteLLM (null unless `active`). */
  spend: number | null;
  budget_reset_at: string | null;
  blocked: boolean | null;
  /** Why the status is `unknown`. */
  litellm_error?: string;
  /** Earlier keys of this alias, still valid until their deadline. */
  retiring: RetiringView[];
  created_by: string;
  created_at: string;
  updated_at: string;
  rotated_at: string | null;
}

export type CreateInput = { alias: string } & Partial<VirtualKeySettings>;
/** LiteLLM cannot take a budget_duration away again (it ignores a null one), so a PATCH only sets it. */
export type UpdateInput = Partial<Omit<VirtualKeySettings, 'budget_duration'>> & { budget_duration?: string };

export interface VirtualKeysDeps {
  pool: Pool;
  litellm: LitellmAdmin;
  /** Each key LiteLLM hands out joins the log redaction the moment it arrives. */
  secrets: SecretRegistry;
  log: Logger;
}

/** The metadata field that tags the key keyplane asks LiteLLM to make (see virtual_keys.op). */
export const OP_FIELD = 'keyplane_op';

/** What LiteLLM is sent for `s` on /key/generate, tagged with `op`; unset settings are left out (LiteLLM's defaults). */
export function generateSettings(s: VirtualKeySettings, op: string): LitellmSettings {
  return {
    models: s.models,
    metadata: { ...s.metadata, [OP_FIELD]: op },
    ...(s.max_budget !== null ? { max_budget: s.max_budget } : {}),
    ...(s.budget_duration !== null ? { budget_duration: s.budget_duration } : {}),
    ...(s.rpm_limit !== null ? { rpm_limit: s.rpm_limit } : {}),
    ...(s.tpm_limit !== null ? { tpm_limit: s.tpm_limit } : {}),
    ...(s.duration !== null ? { duration: s.duration } : {}),
  };
}

const DEFAULTS: VirtualKeySettings = { models: [], max_budget: null, budget_duration: null, rpm_limit: null, tpm_limit: null, duration: null, metadata: {} };
/** LiteLLM pages /key/list by at most 100. */
const LIST_PAGE = 100;
/** /key/info calls at once when keys are looked up one by one. */
const INFO_CONCURRENCY = 8;

/**
 * Virtual keys: LiteLLM's own client keys, with budgets and limits, made and changed through
 * LiteLLM's /key/* API (they need LiteLLM's database). keyplane keeps each alias with LiteLLM's
 * hash of its key and the settings it was given; the key itself is returned once and never kept.
 * Writes of one alias take turns (its row is locked while LiteLLM is called).
 */
export class VirtualKeysService {
  readonly store: VirtualKeysStore;

  constructor(private readonly deps: VirtualKeysDeps) {
    this.store = new VirtualKeysStore(deps.pool);
  }

  get litellm(): LitellmAdmin {
    return this.deps.litellm;
  }

  async create(input: CreateInput, ctx: RequestContext): Promise<{ key: string; view: VirtualKeyView }> {
    const { alias } = input;
    const settings: VirtualKeySettings = { ...DEFAULTS, ...withoutAlias(input) };
    const op = `create:${randomBytes(8).toString('hex')}`;
    try {
      await this.store.reserve(this.deps.pool, alias, settings, op, ctx.principal.actor);
    } catch (err) {
      if ((err as { code?: string }).code !== '23505') throw err;
      if ((await this.store.get(alias))?.status === 'creating') {
        throw new Conflict(`virtual key ${alias} is being created, or its create did not finish (LiteLLM did not answer); keyplane undoes that once LiteLLM answers: try again in a few minutes`, { alias });
      }
      throw new Conflict(`virtual key ${alias} exists: rotate it (POST .../${alias}/rotate) or delete it first`, { alias });
    }
    let made;
    try {
      made = await this.deps.litellm.call((c) => c.generateKey({ ...generateSettings(settings, op), key_alias: alias }));
    } catch (err) {
      // Without a master key or a database LiteLLM made nothing; otherwise its answer may have been lost after it made the key.
      if (err instanceof LitellmProblem && (err.type === 'litellm-not-configured' || err.type === 'litellm-no-database')) await this.store.unreserve(this.deps.pool, alias);
      else await this.discardCreate({ alias, op });
      throw err;
    }
    this.deps.secrets.add(made.key);
    let row: VirtualKeyRow;
    try {
      row = await withTransaction(this.deps.pool, async (c) => {
        const r = await this.store.activate(c, alias, { token: made.token, maskedKey: made.keyName, expiresAt: made.expires ? new Date(made.expires) : null });
        await appendAudit(c, { actor: ctx.principal.actor, action: 'virtual_key.create', target: `virtual_key/${alias}`, requestId: ctx.requestId, details: { token: made.token, ...settings } });
        return r;
      }, { attempts: 1 });
    } catch (err) {
      // Nobody will ever hold this key: take it back out of LiteLLM.
      await this.discardCreate({ alias, op });
      throw err;
    }
    this.deps.log.info('virtual key created', { alias, created_by: ctx.principal.actor });
    return { key: made.key, view: (await this.views([row]))[0]! };
  }

  /**
   * Undoes a create that did not finish: the key LiteLLM may have made for it (found by its tag;
   * its answer never reached anyone) is deleted and the alias freed. When LiteLLM cannot be asked,
   * the reservation stays for the leader to try again (the VirtualKeyWorker calls this too).
   */
  async discardCreate(k: { alias: string; op: string }, abandoned = false): Promise<boolean> {
    let deleted: string[];
    try {
      deleted = await this.deps.litellm.run(async (l) => {
        const made: string[] = [];
        for (let page = 1, pages = 1; page <= pages; page++) {
          const p = await l.listKeys({ page, size: LIST_PAGE, keyAlias: k.alias });
          pages = p.totalPages;
          for (const key of p.keys) if (key.token && key.metadata[OP_FIELD] === k.op) made.push(key.token);
        }
        if (made.length) await l.deleteKeys(made);
        return made;
      });
    } catch (err) {
      this.deps.log.warn('virtual key: could not undo an unfinished create in LiteLLM; the leader tries again', { alias: k.alias, err });
      return false;
    }
    await withTransaction(this.deps.pool, async (c) => {
      await this.store.unreserve(c, k.alias);
      if (abandoned) {
        await appendAudit(c, { actor: 'keyplane', action: 'virtual_key.create_abandoned', target: `virtual_key/${k.alias}`, details: { deleted_in_litellm: deleted, note: 'left unfinished when keyplane stopped; undone' } });
      }
    });
    return true;
  }

  async get(alias: string): Promise<VirtualKeyView> {
    const row = await this.store.get(alias);
    if (!row) throw new NotFound(`virtual key ${alias}`);
    return (await this.views([row]))[0]!;
  }

  /** One page by alias, each reconciled with LiteLLM. */
  async list(page: PageRequest<string>): Promise<{ items: VirtualKeyView[]; next: string | undefined }> {
    const p = pageOf(await this.store.list({ limit: page.limit + 1, after: page.after }), page.limit, (r) => r.alias);
    return { items: await this.views(p.items), next: p.next };
  }

  /** Changes budgets and limits in LiteLLM (`/key/update`), for the key and for earlier keys still valid, then in keyplane. */
  async update(alias: string, input: UpdateInput, ctx: RequestContext): Promise<VirtualKeyView> {
    const row = await withTransaction(this.deps.pool, async (c) => {
      const cur = await this.writable(c, alias);
      const patch: LitellmSettings = { ...input };
      const retiring = await this.store.retiring(c, [alias]);
      const info = await this.deps.litellm.call(async (l) => {
        const out = await l.updateKey(cur.token!, patch).catch((err: unknown) => {
          if (err instanceof LitellmApiError && err.status === 404) throw gone(alias);
          throw err;
        });
        // An earlier key still in its grace period is limited the same way (a budget cut must hold for it too).
        for (const r of retiring) await l.updateKey(r.old_token, patch).catch(ignoreNotFound);
        return out;
      });
      const settings: VirtualKeySettings = { ...pick(cur), ...input };
      const expiresAt = input.duration !== undefined ? (info.expires ? new Date(info.expires) : null) : cur.expires_at;
      const next = await this.store.updateSettings(c, alias, settings, expiresAt);
      await appendAudit(c, { actor: ctx.principal.actor, action: 'virtual_key.update', target: `virtual_key/${alias}`, requestId: ctx.requestId, details: { token: cur.token, changed: input } });
      return next;
    }, { attempts: 1 });
    return (await this.views([row]))[0]!;
  }

  /** Deletes the key in LiteLLM (and earlier keys still in their grace period), then keyplane's record. */
  async delete(alias: string, ctx: RequestContext): Promise<void> {
    await withTransaction(this.deps.pool, async (c) => {
      const cur = await this.writable(c, alias);
      const retiring = await this.store.retiring(c, [alias]);
      const tokens = [cur.token!, ...retiring.map((r) => r.old_token)];
      const found = await this.deps.litellm.call((l) => l.deleteKeys(tokens)).then(
        () => true,
        (err: unknown) => {
          // None of them exists any more: what DELETE wants is already so.
          if (err instanceof LitellmProblem && err.litellmStatus === 404) return false;
          throw err;
        },
      );
      await this.store.remove(c, alias);
      const closed = await this.store.closeRetiring(c, alias, 'deleted with the virtual key');
      await appendAudit(c, {
        actor: ctx.principal.actor, action: 'virtual_key.delete', target: `virtual_key/${alias}`, requestId: ctx.requestId,
        details: { token: cur.token, retiring_deleted: retiring.map((r) => r.old_token), rotations_closed: closed, ...(found ? {} : { note: 'LiteLLM no longer had the key' }) },
      });
    }, { attempts: 1 });
    this.deps.log.info('virtual key deleted', { alias, deleted_by: ctx.principal.actor });
  }

  /** Locks a virtual key for a write: it must exist, be made, and not be in the middle of a rotation. */
  async writable(c: PoolClient, alias: string): Promise<VirtualKeyRow> {
    const cur = await this.store.lock(c, alias);
    if (!cur) throw new NotFound(`virtual key ${alias}`);
    if (cur.status !== 'active') throw new Conflict(`virtual key ${alias} is still being created; try again in a moment`, { alias });
    const g = await this.store.generating(c, alias);
    if (g) throw new Conflict(`virtual key ${alias} is being rotated (rotation ${g.id}); try again in a moment`, { alias, rotation_id: g.id });
    return cur;
  }

  /** keyplane's rows reconciled with LiteLLM: whether LiteLLM still has each key, and its spend. */
  async views(rows: VirtualKeyRow[]): Promise<VirtualKeyView[]> {
    const tokens = rows.filter((r) => r.status === 'active').map((r) => r.token!);
    const [seen, retiring] = await Promise.all([this.lookup(tokens), this.store.retiring(this.deps.pool, rows.map((r) => r.alias))]);
    return rows.map((r) => view(r, seen, retiring.filter((x) => x.alias === r.alias)));
  }

  /**
   * What LiteLLM says about `tokens`. Its /key/list (100 a page, whole objects) when that takes
   * fewer calls than one /key/info per key; a key the list misses is confirmed with /key/info (a
   * key deleted while the list was paged shifts the pages), so only a 404 makes a key `gone`.
   */
  private async lookup(tokens: string[]): Promise<Lookup> {
    if (tokens.length === 0) return { found: new Map(), gone: new Set() };
    try {
      return await this.deps.litellm.run(async (c) => {
        const found = new Map<string, VirtualKeyInfo>();
        let missing = tokens;
        if (tokens.length > 1) {
          const first = await c.listKeys({ page: 1, size: LIST_PAGE });
          if (first.totalPages <= tokens.length) {
            const all = [...first.keys];
            for (let p = 2; p <= first.totalPages; p++) all.push(...(await c.listKeys({ page: p, size: LIST_PAGE })).keys);
            const wanted = new Set(tokens);
            for (const k of all) if (k.token && wanted.has(k.token)) found.set(k.token, k);
            missing = tokens.filter((t) => !found.has(t));
          }
        }
        const gone = new Set<string>();
        await eachLimited(missing, INFO_CONCURRENCY, async (t) => {
          try {
            found.set(t, await c.keyInfo(t));
          } catch (err) {
            if (err instanceof LitellmApiError && err.status === 404) gone.add(t);
            else throw err;
          }
        });
        return { found, gone };
      });
    } catch (err) {
      if (err instanceof LitellmApiError) return { error: this.deps.litellm.problem(err).message };
      if (err instanceof LitellmProblem) return { error: err.message };
      throw err;
    }
  }
}

type Lookup = { found: Map<string, VirtualKeyInfo>; gone: Set<string> } | { error: string };

function view(r: VirtualKeyRow, seen: Lookup, retiring: RotationRow[]): VirtualKeyView {
  let status: ReconciledStatus = 'creating';
  let info: VirtualKeyInfo | undefined;
  if (r.status === 'active') {
    if ('error' in seen) status = 'unknown';
    else if (seen.gone.has(r.token!)) status = 'gone';
    else if ((info = seen.found.get(r.token!))) status = 'active';
    else status = 'unknown';
  }
  return {
    alias: r.alias,
    status,
    token: r.token,
    masked_key: r.masked_key,
    ...pick(r),
    expires_at: r.expires_at ? r.expires_at.toISOString() : null,
    spend: info?.spend ?? null,
    budget_reset_at: info?.budget_reset_at ?? null,
    blocked: info?.blocked ?? null,
    ...(status === 'unknown' && 'error' in seen ? { litellm_error: seen.error } : {}),
    retiring: retiring.map((x) => ({ rotation_id: x.id, token: x.old_token, masked_key: x.old_masked_key, delete_at: x.delete_at!.toISOString(), attempts: x.attempts, last_error: x.last_error })),
    created_by: r.created_by,
    created_at: r.created_at.toISOString(),
    updated_at: r.updated_at.toISOString(),
    rotated_at: r.rotated_at ? r.rotated_at.toISOString() : null,
  };
}

export function pick(r: VirtualKeySettings): VirtualKeySettings {
  return { models: r.models, max_budget: r.max_budget, budget_duration: r.budget_duration, rpm_limit: r.rpm_limit, tpm_limit: r.tpm_limit, duration: r.duration, metadata: r.metadata };
}

function withoutAlias(input: CreateInput): Partial<VirtualKeySettings> {
  const { alias: _alias, ...rest } = input;
  return rest;
}

function gone(alias: string): AppError {
  return new AppError(409, 'virtual-key-gone', 'Virtual key gone from LiteLLM', `LiteLLM no longer has the key of ${alias} (it was deleted there); DELETE it here to drop the record, then create it again`, { alias });
}

function ignoreNotFound(err: unknown): void {
  if (err instanceof LitellmApiError && err.status === 404) return;
  throw err;
}

async function eachLimited<T>(items: T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) await fn(items[next++]!);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}
