import type { Pool, PoolClient } from '../../db/pool';
import { withTransaction } from '../../db/pool';
import { deploymentPairs, destinationOf, type Pair } from '../../destinations';
import { Conflict, NotFound, ValidationFailed } from '../../http/errors';
import type { RequestContext } from '../../http/principal';
import { isReservedKey } from '../../key-rules';
import { appendAudit } from '../audit/audit-store';
import type { DestinationsService } from '../destinations/destinations-service';
import { pageOf, type PageRequest } from '../../http/paging';
import { toKeyHealthView, type KeyHealthView } from '../../health/key-health-store';

export interface ProviderInput {
  kind: string;
  api_base?: string | null;
  /** A pool of one (as before pools); with `keys`, it must name the first. */
  key_name?: string;
  /** The pool: every model of the provider is rendered once per key in service, with its weight. */
  keys?: Array<{ name: string; weight?: number }>;
  active?: boolean;
}

export interface PoolKeyView {
  name: string;
  weight: number;
  /** Whether the platform key exists. */
  has_key: boolean;
  state: string | null;
  state_reason: string | null;
  state_since: string | null;
  state_until: string | null;
  /** What the last probe of the key found, credit included (null: never probed). */
  health: KeyHealthView | null;
}

export interface ProviderView {
  slug: string;
  kind: string;
  api_base: string | null;
  key_name: string;
  /** The pool, in order, with each key's state. */
  keys: PoolKeyView[];
  /** Keys of the pool that exist and are not disabled. */
  keys_in_service: number;
  /** What the admin asked for. */
  enabled: boolean;
  has_key: boolean;
  /** enabled and a key of its pool in service: only active providers' models are rendered. */
  active: boolean;
  created_at: string;
  updated_at: string;
}

interface Row {
  slug: string;
  kind: string;
  api_base: string | null;
  key_name: string;
  enabled: boolean;
  keys: Array<{ name: string; weight: number; state: string | null; state_reason: string | null; state_since: string | null; state_until: string | null; health: Parameters<typeof toKeyHealthView>[0] | null }>;
  created_at: Date;
  updated_at: Date;
}

const SELECT = `SELECT p.slug, p.kind, p.api_base, p.key_name, p.enabled, p.created_at, p.updated_at,
    coalesce((SELECT json_agg(json_build_object('name', pk.key_name, 'weight', pk.weight, 'state', k.state, 'state_reason', k.state_reason,
                'state_since', k.state_since, 'state_until', k.state_until, 'health', CASE WHEN h.name IS NULL THEN NULL ELSE to_json(h) END) ORDER BY pk.position)
              FROM provider_keys pk LEFT JOIN platform_keys k ON k.name = pk.key_name LEFT JOIN key_health h ON h.name = pk.key_name
              WHERE pk.provider = p.slug), '[]'::json) AS keys
  FROM providers p`;

const iso = (t: string | null): string | null => (t === null ? null : new Date(t).toISOString());

const view = (r: Row): ProviderView => {
  const keys: PoolKeyView[] = r.keys.map((k) => ({
    name: k.name,
    weight: k.weight,
    has_key: k.state !== null,
    state: k.state,
    state_reason: k.state_reason,
    state_since: iso(k.state_since),
    state_until: iso(k.state_until),
    health: k.health ? toKeyHealthView(k.health) : null,
  }));
  const inService = keys.filter((k) => k.has_key && k.state !== 'disabled').length;
  return {
    slug: r.slug,
    kind: r.kind,
    api_base: r.api_base,
    key_name: r.key_name,
    keys,
    keys_in_service: inService,
    enabled: r.enabled,
    has_key: keys.some((k) => k.has_key),
    active: r.enabled && inService > 0,
    created_at: r.created_at.toISOString(),
    updated_at: r.updated_at.toISOString(),
  };
};

export const POOL_MAX = 20;

/** The pool a write asks for, or undefined to keep the current one. */
function poolFrom(input: ProviderInput): Array<{ name: string; weight: number }> | undefined {
  if (input.keys) {
    const problems: Array<{ field: string; rule: string }> = [];
    if (input.keys.length === 0) problems.push({ field: 'keys', rule: 'must name at least one key' });
    if (input.keys.length > POOL_MAX) problems.push({ field: 'keys', rule: `at most ${POOL_MAX} keys` });
    const seen = new Set<string>();
    input.keys.forEach((k, i) => {
      if (seen.has(k.name)) problems.push({ field: `keys[${i}].name`, rule: `${k.name} is already in the pool` });
      seen.add(k.name);
    });
    if (input.key_name !== undefined && input.keys[0] && input.key_name !== input.keys[0].name) {
      problems.push({ field: 'key_name', rule: 'must be the first of keys when both are given' });
    }
    if (problems.length) throw new ValidationFailed(problems);
    return input.keys.map((k) => ({ name: k.name, weight: k.weight ?? 1 }));
  }
  return input.key_name !== undefined ? [{ name: input.key_name, weight: 1 }] : undefined;
}

export class ProvidersService {
  constructor(
    private readonly pool: Pool,
    private readonly destinations: DestinationsService,
  ) {}

  /** One page of providers by slug; `next` is the slug to continue after. */
  async list(page: PageRequest<string>): Promise<{ items: ProviderView[]; next: string | undefined }> {
    const { rows } = await this.pool.query<Row>(`${SELECT} WHERE $1::text IS NULL OR p.slug > $1 ORDER BY p.slug LIMIT $2`, [page.after ?? null, page.limit + 1]);
    const p = pageOf(rows, page.limit, (r) => r.slug);
    return { items: p.items.map(view), next: p.next };
  }

  async get(slug: string): Promise<ProviderView> {
    const r = (await this.pool.query<Row>(`${SELECT} WHERE p.slug = $1`, [slug])).rows[0];
    if (!r) throw new NotFound(`provider ${slug}`);
    return view(r);
  }

  /** Creates or updates; fields left out keep their current value (or their default on create). */
  async put(slug: string, input: ProviderInput, ctx: RequestContext): Promise<{ view: ProviderView; created: boolean }> {
    const asked = poolFrom(input);
    const created = await withTransaction(this.pool, async (c) => {
      const cur = (await c.query<Omit<Row, 'keys'>>('SELECT * FROM providers WHERE slug = $1 FOR UPDATE', [slug])).rows[0];
      const curPool = (await c.query<{ name: string; weight: number }>('SELECT key_name AS name, weight FROM provider_keys WHERE provider = $1 ORDER BY position', [slug])).rows;
      const pool = asked ?? (curPool.length ? curPool : [{ name: cur?.key_name ?? slug, weight: 1 }]);
      const next = {
        kind: input.kind,
        api_base: input.api_base !== undefined ? input.api_base : (cur?.api_base ?? null),
        key_name: pool[0]!.name,
        enabled: input.active ?? cur?.enabled ?? true,
      };
      const reserved = pool.findIndex((k) => isReservedKey(k.name));
      if (reserved >= 0) {
        const field = input.keys ? `keys[${reserved}].name` : 'key_name';
        throw new ValidationFailed([{ field, rule: `${pool[reserved]!.name} is LiteLLM's own key and is never sent to a provider` }]);
      }
      const poolChanged = JSON.stringify(pool) !== JSON.stringify(curPool);
      const keysChanged = pool.map((k) => k.name).join() !== curPool.map((k) => k.name).join();
      // Where keys go changes only with kind, api_base or the pool's keys; weights and switching a provider on or off send nothing new.
      const rebound = !cur || cur.kind !== next.kind || cur.api_base !== next.api_base || keysChanged;
      const approved = rebound ? await this.destinations.enforce(c, await this.pairs(c, slug, { ...next, keys: pool.map((k) => k.name) }, input), ctx) : [];
      await c.query(
        `INSERT INTO providers (slug, kind, api_base, key_name, enabled) VALUES ($1,$2,$3,$4,$5)
         ON CONFLICT (slug) DO UPDATE SET kind = EXCLUDED.kind, api_base = EXCLUDED.api_base, key_name = EXCLUDED.key_name,
           enabled = EXCLUDED.enabled, updated_at = now()`,
        [slug, next.kind, next.api_base, next.key_name, next.enabled],
      );
      if (poolChanged) {
        await c.query('DELETE FROM provider_keys WHERE provider = $1', [slug]);
        await c.query(
          `INSERT INTO provider_keys (provider, key_name, weight, position)
           SELECT $1, k.name, k.weight, k.ord::int - 1 FROM unnest($2::text[], $3::int[]) WITH ORDINALITY AS k(name, weight, ord)`,
          [slug, pool.map((k) => k.name), pool.map((k) => k.weight)],
        );
      }
      await appendAudit(c, {
        actor: ctx.principal.actor,
        action: cur ? 'provider.update' : 'provider.create',
        target: `provider/${slug}`,
        requestId: ctx.requestId,
        details: { ...next, keys: pool, ...(approved.length ? { approved_destinations: approved } : {}) },
      });
      return !cur;
    });
    return { view: await this.get(slug), created };
  }

  /** The pairs a provider makes with its new binding: each pool key's, and those of every model it serves with each key. */
  private async pairs(c: PoolClient, slug: string, next: { kind: string; api_base: string | null; keys: string[] }, input: ProviderInput): Promise<Pair[]> {
    const field = input.api_base !== undefined ? 'api_base' : input.keys !== undefined ? 'keys' : input.key_name !== undefined ? 'key_name' : 'kind';
    const pairs: Pair[] = [];
    const keyOfEnv = await this.destinations.store.keyOfEnv(c);
    const models = await c.query<{ id: string; api_base: string | null; litellm_params: Record<string, unknown> }>(
      'SELECT id, api_base, litellm_params FROM models WHERE provider = $1 ORDER BY id',
      [slug],
    );
    for (const keyName of next.keys) {
      const provider = { kind: next.kind, apiBase: next.api_base, keyName };
      pairs.push({ keyName, destination: destinationOf(next.kind, next.api_base), field });
      for (const m of models.rows) {
        const { pairs: own } = deploymentPairs({ model: { apiBase: m.api_base, litellmParams: m.litellm_params }, provider, providerField: field }, keyOfEnv);
        for (const p of own) pairs.push({ ...p, field: p.field === field ? field : `model ${m.id} ${p.field}` });
      }
    }
    return pairs;
  }

  async delete(slug: string, ctx: RequestContext): Promise<void> {
    await withTransaction(this.pool, async (c) => {
      const cur = (await c.query('SELECT slug FROM providers WHERE slug = $1 FOR UPDATE', [slug])).rows[0];
      if (!cur) throw new NotFound(`provider ${slug}`);
      const used = await c.query<{ id: string; model_name: string }>('SELECT id, model_name FROM models WHERE provider = $1 ORDER BY model_name, id', [slug]);
      if (used.rows.length) {
        throw new Conflict(`provider ${slug} is used by ${used.rows.length} model(s): ${used.rows.map((m) => `${m.model_name} (${m.id})`).join(', ')}`, {
          models: used.rows,
        });
      }
      await c.query('DELETE FROM providers WHERE slug = $1', [slug]);
      await appendAudit(c, { actor: ctx.principal.actor, action: 'provider.delete', target: `provider/${slug}`, requestId: ctx.requestId });
    });
  }
}
