import type { Pool, PoolClient } from '../../db/pool';
import { withTransaction } from '../../db/pool';
import { deploymentPairs, destinationOf, type Pair } from '../../destinations';
import { Conflict, NotFound, ValidationFailed } from '../../http/errors';
import type { RequestContext } from '../../http/principal';
import { isReservedKey } from '../../key-rules';
import { appendAudit } from '../audit/audit-store';
import type { DestinationsService } from '../destinations/destinations-service';
import { pageOf, type PageRequest } from '../../http/paging';

export interface ProviderInput {
  kind: string;
  api_base?: string | null;
  key_name?: string;
  active?: boolean;
}

export interface ProviderView {
  slug: string;
  kind: string;
  api_base: string | null;
  key_name: string;
  /** What the admin asked for. */
  enabled: boolean;
  has_key: boolean;
  /** enabled and its key exists: only active providers are rendered and probed. */
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
  has_key: boolean;
  created_at: Date;
  updated_at: Date;
}

const SELECT = `SELECT p.slug, p.kind, p.api_base, p.key_name, p.enabled, (k.name IS NOT NULL) AS has_key, p.created_at, p.updated_at
  FROM providers p LEFT JOIN platform_keys k ON k.name = p.key_name`;

const view = (r: Row): ProviderView => ({
  slug: r.slug,
  kind: r.kind,
  api_base: r.api_base,
  key_name: r.key_name,
  enabled: r.enabled,
  has_key: r.has_key,
  active: r.enabled && r.has_key,
  created_at: r.created_at.toISOString(),
  updated_at: r.updated_at.toISOString(),
});

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
    const created = await withTransaction(this.pool, async (c) => {
      const cur = (await c.query<Row>('SELECT * FROM providers WHERE slug = $1 FOR UPDATE', [slug])).rows[0];
      const next = {
        kind: input.kind,
        api_base: input.api_base !== undefined ? input.api_base : (cur?.api_base ?? null),
        key_name: input.key_name ?? cur?.key_name ?? slug,
        enabled: input.active ?? cur?.enabled ?? true,
      };
      if (isReservedKey(next.key_name)) {
        throw new ValidationFailed([{ field: 'key_name', rule: `${next.key_name} is LiteLLM's own key and is never sent to a provider` }]);
      }
      // Where keys go changes only with kind, api_base or key_name; switching a provider on or off sends nothing new.
      const rebound = !cur || cur.kind !== next.kind || cur.api_base !== next.api_base || cur.key_name !== next.key_name;
      const approved = rebound ? await this.destinations.enforce(c, await this.pairs(c, slug, next, input), ctx) : [];
      await c.query(
        `INSERT INTO providers (slug, kind, api_base, key_name, enabled) VALUES ($1,$2,$3,$4,$5)
         ON CONFLICT (slug) DO UPDATE SET kind = EXCLUDED.kind, api_base = EXCLUDED.api_base, key_name = EXCLUDED.key_name,
           enabled = EXCLUDED.enabled, updated_at = now()`,
        [slug, next.kind, next.api_base, next.key_name, next.enabled],
      );
      await appendAudit(c, {
        actor: ctx.principal.actor,
        action: cur ? 'provider.update' : 'provider.create',
        target: `provider/${slug}`,
        requestId: ctx.requestId,
        details: approved.length ? { ...next, approved_destinations: approved } : next,
      });
      return !cur;
    });
    return { view: await this.get(slug), created };
  }

  /** The pairs a provider makes with its new binding: its own, and those of every model it serves. */
  private async pairs(c: PoolClient, slug: string, next: { kind: string; api_base: string | null; key_name: string }, input: ProviderInput): Promise<Pair[]> {
    const field = input.api_base !== undefined ? 'api_base' : input.key_name !== undefined ? 'key_name' : 'kind';
    const provider = { kind: next.kind, apiBase: next.api_base, keyName: next.key_name };
    const pairs: Pair[] = [{ keyName: next.key_name, destination: destinationOf(next.kind, next.api_base), field }];
    const keyOfEnv = await this.destinations.store.keyOfEnv(c);
    const models = await c.query<{ id: string; api_base: string | null; litellm_params: Record<string, unknown> }>(
      'SELECT id, api_base, litellm_params FROM models WHERE provider = $1 ORDER BY id',
      [slug],
    );
    for (const m of models.rows) {
      const { pairs: own } = deploymentPairs({ model: { apiBase: m.api_base, litellmParams: m.litellm_params }, provider, providerField: field }, keyOfEnv);
      for (const p of own) pairs.push({ ...p, field: p.field === field ? field : `model ${m.id} ${p.field}` });
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
