import { randomBytes } from 'node:crypto';
import type { Pool, PoolClient } from '../../db/pool';
import { withTransaction } from '../../db/pool';
import { destinationOf, type Pair } from '../../destinations';
import { formatDuration } from '../../duration';
import { AppError, Conflict, NotFound, Unprocessable, ValidationFailed } from '../../http/errors';
import { pageOf, type PageRequest } from '../../http/paging';
import { roleAtLeast, type RequestContext } from '../../http/principal';
import { envVarProblem, isReservedKey } from '../../key-rules';
import type { Logger, SecretRegistry } from '../../log';
import type { KeyFinding } from '../../health/key-findings';
import type { ProbeTarget } from '../../health/probes';
import type { KeyState } from '../../sync/desired-state';
import { appendAudit } from '../audit/audit-store';
import type { DestinationsService } from '../destinations/destinations-service';
import { POOL_MAX } from '../providers/providers-service';
import { defaultEnvVar, type PlatformKeysService, type PlatformKeyView } from '../platform-keys/platform-keys-service';
import { RotationStore, type PoolProvider, type RotationRow, type RotationStatus, type RotationStep } from './rotation-store';

export const GRACE_DEFAULT_MS = 10 * 60_000;
export const GRACE_MAX_MS = 7 * 86_400_000;

export interface RotateInput {
  api_key: string;
  /** The key to replace; default: the pool's oldest key in service (else its oldest disabled one). */
  replaces?: string;
  graceMs?: number;
  /** The new key's name; default `<slug>-<6 hex>`. */
  name?: string;
  env_var?: string;
  expires_at?: string | null;
}

export interface RotationView {
  rotation_id: number;
  provider: string;
  status: RotationStatus;
  /** The new key, masked (only its name once it is deleted). */
  new_key: PlatformKeyView | { name: string };
  replaces: string;
  /** Every provider whose pool got the new key beside the replaced one. */
  pools: string[];
  grace: string;
  /** When the replaced key leaves the files (set once it is retiring). */
  retire_at: string | null;
  steps: RotationStep[];
  error: string | null;
  created_by: string;
  created_at: string;
  updated_at: string;
}

/** One unbilled request with a key to a provider, judged as the key prober judges a key. */
export type KeyProbe = (target: Omit<ProbeTarget, 'degradedMs'>) => Promise<KeyFinding>;

export interface RotationServiceDeps {
  pool: Pool;
  platformKeys: PlatformKeysService;
  destinations: DestinationsService;
  probe: KeyProbe;
  /** The new value is not stored when it is probed: registered here so that no log line shows it. */
  secrets: SecretRegistry;
  log: Logger;
  /** Tells this instance's rotation worker to look now (the leader's also looks after each render). */
  nudge?: () => void;
}

/** What a rotation will do, worked out before the key is sent anywhere and again under locks. */
interface Plan {
  replaces: string;
  replacedState: KeyState;
  pools: PoolProvider[];
  newName: string;
  /** (new key, destination) for every deployment and probe of every pool. */
  pairs: Pair[];
}

/** The same Idempotency-Key was sent with another request. */
class IdempotencyKeyReused extends AppError {
  constructor(key: string, id: number) {
    super(422, 'idempotency-key-reused', 'Idempotency-Key reused', `Idempotency-Key ${key} was already used for another request (rotation ${id}); send a new key for a new rotation`, { rotation_id: id });
  }
}

/**
 * `POST .../providers/:slug/rotate`: validates a new key with the provider, adds it beside the key it
 * replaces in every pool that holds that key, and records the rotation; the RotationWorker (on the
 * leader) carries it on: served, retiring, removed. Nothing is written when the provider refuses
 * the key, or when the caller may not send it where the pools send their keys.
 */
export class RotationService {
  readonly store: RotationStore;

  constructor(private readonly deps: RotationServiceDeps) {
    this.store = new RotationStore(deps.pool);
  }

  async rotate(slug: string, input: RotateInput, ctx: RequestContext, idempotencyKey?: string): Promise<{ view: RotationView; replayed: boolean }> {
    const digest = idempotencyKey === undefined ? null : this.requestDigest(slug, input);
    if (idempotencyKey !== undefined) {
      const prior = await this.replay(idempotencyKey, digest!);
      if (prior) return prior;
    }
    let row: RotationRow;
    try {
      const first = await this.plan(this.deps.pool, slug, input, ctx);
      const validated = await this.validate(first, input.api_key);
      row = await withTransaction(this.deps.pool, (c) => this.add(c, slug, input, ctx, first, validated, idempotencyKey ?? null, digest));
    } catch (err) {
      // A request with the same Idempotency-Key that committed first wins: this one is its replay.
      if (idempotencyKey !== undefined && (err instanceof AppError || (err as { code?: string }).code === '23505')) {
        const prior = await this.replay(idempotencyKey, digest!);
        if (prior) return prior;
      }
      throw err;
    }
    this.deps.log.info('rotation: new key added beside the old one', { rotation_id: row.id, provider: slug, new_key: row.new_key, replaces: row.replaces, pools: row.pools });
    this.deps.nudge?.();
    return { view: await this.view(row), replayed: false };
  }

  async get(slug: string, id: number): Promise<RotationView> {
    const row = await this.store.get(id);
    if (!row || row.provider !== slug) throw new NotFound(`rotation ${id} of provider ${slug}`);
    return this.view(row);
  }

  /** One page of a provider's rotations, newest first; `next` is the id to continue before. */
  async list(slug: string, page: PageRequest<number>): Promise<{ items: RotationView[]; next: number | undefined }> {
    const p = pageOf(await this.store.list(slug, { limit: page.limit + 1, after: page.after }), page.limit, (r) => r.id);
    return { items: await Promise.all(p.items.map((r) => this.view(r))), next: p.next };
  }

  async view(r: RotationRow): Promise<RotationView> {
    const key = await this.deps.platformKeys.get(r.new_key).catch((err: unknown) => {
      if (err instanceof NotFound) return { name: r.new_key };
      throw err;
    });
    return {
      rotation_id: r.id,
      provider: r.provider,
      status: r.status,
      new_key: key,
      replaces: r.replaces,
      pools: r.pools,
      grace: formatDuration(r.grace_ms),
      retire_at: r.retire_at ? r.retire_at.toISOString() : null,
      steps: r.steps,
      error: r.error,
      created_by: r.created_by,
      created_at: r.created_at.toISOString(),
      updated_at: r.updated_at.toISOString(),
    };
  }

  /** Keyed (HMAC) digest of the request: a replay is recognised without storing anything that holds the key. */
  private requestDigest(slug: string, input: RotateInput): string {
    const fields = { slug, api_key: input.api_key, replaces: input.replaces ?? null, grace_ms: input.graceMs ?? null, name: input.name ?? null, env_var: input.env_var ?? null, expires_at: input.expires_at ?? null };
    return this.deps.platformKeys.fingerprint(JSON.stringify(fields));
  }

  private async replay(key: string, digest: string): Promise<{ view: RotationView; replayed: boolean } | undefined> {
    const prior = await this.store.byIdempotencyKey(key);
    if (!prior) return undefined;
    if (prior.request_digest !== digest) throw new IdempotencyKeyReused(key, prior.id);
    return { view: await this.view(prior), replayed: true };
  }

  /**
   * Works out the rotation and checks everything that needs no provider: the key it replaces, the
   * new name and env var, room in every pool, and (for an operator) that every destination the new
   * key would go to is one an admin approved for the key it replaces.
   */
  private async plan(c: Pool | PoolClient, slug: string, input: RotateInput, ctx: RequestContext, newName?: string): Promise<Plan> {
    const provider = await this.store.provider(c, slug);
    if (!provider) throw new NotFound(`provider ${slug}`);
    const members = await this.store.members(c, slug);
    let replaces: string;
    if (input.replaces !== undefined) {
      if (!members.some((m) => m.key_name === input.replaces)) {
        throw new ValidationFailed([{ field: 'replaces', rule: `${input.replaces} is not in provider ${slug}'s pool (${members.map((m) => m.key_name).join(', ')})` }]);
      }
      replaces = input.replaces;
    } else {
      // The oldest value first; keys in service before disabled ones; never a key already on its way out.
      const candidates = members.filter((m) => m.state !== null && m.state !== 'retiring');
      const byAge = (a: (typeof members)[number], b: (typeof members)[number]): number => a.version_at!.getTime() - b.version_at!.getTime() || a.position - b.position;
      const pick = [...candidates.filter((m) => m.state !== 'disabled')].sort(byAge)[0] ?? [...candidates].sort(byAge)[0];
      if (!pick) throw new Conflict(`provider ${slug}'s pool has no key to replace; store one with PUT /api/v1/admin/platform-keys/<name>, or name it in replaces`);
      replaces = pick.key_name;
    }
    const replaced = members.find((m) => m.key_name === replaces)!;
    if (replaced.state === null) throw new Conflict(`platform key ${replaces} has no value to replace; store one with PUT /api/v1/admin/platform-keys/${replaces}`, { replaces });
    if (replaced.state === 'retiring') throw new Conflict(`platform key ${replaces} is already retiring`, { replaces });
    const open = await this.store.openReplacing(replaces, c);
    if (open) throw new Conflict(`platform key ${replaces} is already being replaced by ${open.new_key} (rotation ${open.id}, ${open.status})`, { rotation_id: open.id });

    const pools = await this.store.poolsHolding(c, replaces);
    const full = pools.filter((p) => p.size >= POOL_MAX);
    if (full.length) throw new Conflict(`the pool of ${full.map((p) => p.slug).join(', ')} already holds ${POOL_MAX} keys; remove one first`);

    const name = newName ?? input.name ?? (await this.freeName(c, slug));
    if (isReservedKey(name)) throw new ValidationFailed([{ field: 'name', rule: `${name} is LiteLLM's own key, not a provider's` }]);
    // A rotation adds a key; giving an existing key a new value (or a new destination) is another write.
    if (!newName && (await this.store.keyExists(c, name))) {
      throw new Conflict(`platform key ${name} already exists: a rotation adds a new key (PUT /api/v1/admin/platform-keys/${name} gives an existing key a new version)`, { name });
    }

    const envVar = input.env_var ?? defaultEnvVar(name);
    const envRule = envVarProblem(envVar, name);
    if (envRule) throw new ValidationFailed([{ field: 'env_var', rule: input.env_var === undefined ? `is required here: the default ${envVar} ${envRule}` : envRule }]);
    const owner = await this.store.envVarOwner(c, envVar);
    if (owner && owner !== name) throw new Conflict(`env var ${envVar} is already used by platform key ${owner}`, { env_var: envVar, used_by: owner });

    const pairs: Pair[] = [];
    for (const p of pools) {
      const dests = new Set([destinationOf(p.kind, p.api_base), ...p.model_bases.map((b) => destinationOf(p.kind, b ?? p.api_base))]);
      for (const destination of [...dests].sort()) pairs.push({ keyName: name, destination, field: `provider ${p.slug}` });
    }
    if (!roleAtLeast(ctx.principal.role, 'admin')) {
      const missing = await this.deps.destinations.store.unapproved(c, pairs.map((p) => ({ ...p, keyName: replaces })));
      if (missing.length) {
        const errors = missing.map((m) => ({ field: m.field, rule: `the new key would go to ${m.destination}, where an admin has not approved sending ${replaces}` }));
        throw new AppError(403, 'destination-not-approved', 'Destination not approved',
          `${errors.map((e) => `${e.field}: ${e.rule}`).join('; ')}; an operator's rotation takes over only the destinations approved for the key it replaces: an admin approves them (PUT /api/v1/admin/platform-keys/${replaces}/allowed-hosts) or rotates`,
          { errors },
        );
      }
    }
    return { replaces, replacedState: replaced.state, pools, newName: name, pairs };
  }

  private async freeName(c: Pool | PoolClient, slug: string): Promise<string> {
    for (;;) {
      const name = `${slug.slice(0, 56)}-${randomBytes(3).toString('hex')}`;
      if (!(await this.store.keyExists(c, name))) return name;
    }
  }

  /**
   * Tries the new value at every enabled provider of the pools, at the endpoint the key prober uses.
   * A key it would take out of service (`auth_failed`; `quota_exhausted`: 402, an insufficient-quota
   * error, no credit left) stops the rotation; an outage says nothing about the key and does not.
   */
  private async validate(plan: Plan, apiKey: string): Promise<RotationStep> {
    this.deps.secrets.add(apiKey);
    const targets = plan.pools.filter((p) => p.enabled);
    const results = await Promise.all(targets.map(async (p) => ({ slug: p.slug, f: await this.deps.probe({ kind: p.kind, apiBase: p.api_base, apiKey }) })));
    const refused = results.filter((r) => r.f.outcome === 'auth_failed' || r.f.outcome === 'quota_exhausted');
    if (refused.length) {
      const reason = refused.some((r) => r.f.outcome === 'auth_failed') ? 'auth_failed' : 'quota_exhausted';
      this.deps.log.warn('rotation: the provider refused the new key; nothing was changed', { key_name: plan.newName, replaces: plan.replaces, providers: refused.map((r) => r.slug), reason });
      throw new Unprocessable(`the provider refused the new key (${reason}): ${refused.map((r) => `${r.slug}: ${r.f.detail}`).join('; ')}; nothing was changed`, {
        reason,
        providers: refused.map((r) => r.slug),
      });
    }
    // A rate-limited key is a valid one.
    const unchecked = results.filter((r) => r.f.outcome !== 'ok' && r.f.outcome !== 'rate_limited');
    return {
      step: 'validated',
      at: new Date().toISOString(),
      providers: results.filter((r) => !unchecked.includes(r)).map((r) => r.slug),
      ...(unchecked.length ? { unchecked: unchecked.map((r) => ({ provider: r.slug, outcome: r.f.outcome, detail: r.f.detail })) } : {}),
    };
  }

  /** One transaction: the rotation's row, the new key, its destinations, its place in every pool, the audit rows. */
  private async add(c: PoolClient, slug: string, input: RotateInput, ctx: RequestContext, first: Plan, validated: RotationStep, idempotencyKey: string | null, digest: string | null): Promise<RotationRow> {
    if (!(await this.store.lockKey(c, first.replaces))) throw new Conflict(`platform key ${first.replaces} was deleted meanwhile; send the rotation again`);
    const plan = await this.plan(c, slug, { ...input, replaces: first.replaces }, ctx, first.newName);
    if (plan.pools.map((p) => p.slug).join() !== first.pools.map((p) => p.slug).join() || plan.pairs.length !== first.pairs.length) {
      throw new Conflict(`the pools holding ${first.replaces} changed while the new key was validated; send the rotation again`);
    }
    const approved = roleAtLeast(ctx.principal.role, 'admin')
      ? await this.deps.destinations.enforce(c, plan.pairs, ctx)
      : (await this.deps.destinations.store.approve(c, plan.pairs, `${ctx.principal.actor} (rotation, as approved for ${plan.replaces})`)).map((a) => `${a.keyName} -> ${a.destination}`);
    const pools = plan.pools.map((p) => p.slug);
    const graceMs = input.graceMs ?? GRACE_DEFAULT_MS;
    const row = await this.store.insert(c, {
      provider: slug,
      newKey: plan.newName,
      replaces: plan.replaces,
      pools,
      graceMs,
      steps: [validated],
      afterRevision: await this.store.latestRevision(c),
      newFingerprint: this.deps.platformKeys.fingerprint(input.api_key),
      idempotencyKey,
      requestDigest: digest,
      createdBy: ctx.principal.actor,
    });
    await this.deps.platformKeys.createIn(c, plan.newName, { value: input.api_key, envVar: input.env_var, expiresAt: input.expires_at ? new Date(input.expires_at) : null }, ctx, { rotation_id: row.id });
    await this.store.addBeside(c, pools, plan.replaces, plan.newName);
    const added: RotationStep = { step: 'added', at: new Date().toISOString(), key: plan.newName, pools, ...(approved.length ? { approved_destinations: approved } : {}) };
    const audit = (step: RotationStep) =>
      appendAudit(c, {
        actor: ctx.principal.actor,
        action: 'provider.rotation',
        target: `provider/${slug}`,
        requestId: ctx.requestId,
        details: { rotation_id: row.id, new_key: plan.newName, replaces: plan.replaces, ...step, ...(step.step === 'added' ? { grace: formatDuration(graceMs) } : {}) },
      });
    await audit(validated);
    await audit(added);
    return this.store.update(c, row.id, { step: added });
  }
}
