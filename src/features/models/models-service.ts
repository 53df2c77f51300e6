import { randomUUID } from 'node:crypto';
import type { Pool } from '../../db/pool';
import { withTransaction } from '../../db/pool';
import { NotFound, ValidationFailed } from '../../http/errors';
import type { RequestContext } from '../../http/principal';
import { appendAudit } from '../audit/audit-store';
import { pageOf, type PageRequest } from '../../http/paging';

export interface ModelInput {
  model_name: string;
  provider: string;
  model: string;
  api_base?: string | null;
  rpm?: number | null;
  tpm?: number | null;
  litellm_params?: Record<string, unknown>;
  model_info?: Record<string, unknown>;
}

export interface ModelView extends Required<Omit<ModelInput, 'api_base' | 'rpm' | 'tpm'>> {
  id: string;
  api_base: string | null;
  rpm: number | null;
  tpm: number | null;
  created_at: string;
  updated_at: string;
}

export interface ModelFilter {
  provider?: string;
  model_name?: string;
}

/** The sort key a page continues after: model_name, created_at in microseconds since 1970 (exact: below 2^53), id. */
export type ModelCursor = [string, number, string];

/** A row of `models` as Postgres returns it. */
export interface ModelRow {
  id: string;
  model_name: string;
  provider: string;
  model: string;
  api_base: string | null;
  rpm: number | null;
  tpm: number | null;
  litellm_params: Record<string, unknown>;
  model_info: Record<string, unknown>;
  created_at: Date;
  updated_at: Date;
}

const view = (r: ModelRow): ModelView => ({
  id: r.id,
  model_name: r.model_name,
  provider: r.provider,
  model: r.model,
  api_base: r.api_base,
  rpm: r.rpm,
  tpm: r.tpm,
  litellm_params: r.litellm_params,
  model_info: r.model_info,
  created_at: r.created_at.toISOString(),
  updated_at: r.updated_at.toISOString(),
});

export class ModelsService {
  constructor(private readonly pool: Pool) {}

  /**
   * One page of deployments in render order (model_name, created_at, id), optionally filtered.
   * `next` is that sort key of the page's last row, created_at in whole microseconds (a JS Date
   * would drop the microseconds Postgres keeps, and skip or repeat rows).
   */
  async list(filter: ModelFilter, page: PageRequest<ModelCursor>): Promise<{ items: ModelView[]; next: ModelCursor | undefined }> {
    const where: string[] = [];
    const args: unknown[] = [];
    if (filter.provider !== undefined) where.push(`provider = $${args.push(filter.provider)}`);
    if (filter.model_name !== undefined) where.push(`model_name = $${args.push(filter.model_name)}`);
    if (page.after) {
      const [name, createdUs, id] = page.after;
      where.push(`(model_name, created_at, id) > ($${args.push(name)}, 'epoch'::timestamptz + $${args.push(createdUs)}::bigint * interval '1 microsecond', $${args.push(id)}::uuid)`);
    }
    const { rows } = await this.pool.query<ModelRow & { created_us: number }>(
      `SELECT *, (extract(epoch FROM created_at) * 1000000)::bigint AS created_us FROM models ${where.length ? 'WHERE ' + where.join(' AND ') : ''}
       ORDER BY model_name, created_at, id LIMIT $${args.push(page.limit + 1)}`,
      args,
    );
    const p = pageOf(rows, page.limit, (r): ModelCursor => [r.model_name, r.created_us, r.id]);
    return { items: p.items.map(view), next: p.next };
  }

  async get(id: string): Promise<ModelView> {
    const r = (await this.pool.query<ModelRow>('SELECT * FROM models WHERE id = $1', [id])).rows[0];
    if (!r) throw new NotFound(`model ${id}`);
    return view(r);
  }

  async create(input: ModelInput, ctx: RequestContext): Promise<ModelView> {
    const id = randomUUID();
    return withTransaction(this.pool, async (c) => {
      await this.assertProvider(c, input.provider);
      const { rows } = await c.query<ModelRow>(
        `INSERT INTO models (id, model_name, provider, model, api_base, rpm, tpm, litellm_params, model_info)
         VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9) RETURNING *`,
        [id, input.model_name, input.provider, input.model, input.api_base ?? null, input.rpm ?? null, input.tpm ?? null, input.litellm_params ?? {}, input.model_info ?? {}],
      );
      await appendAudit(c, { actor: ctx.principal.actor, action: 'model.create', target: `model/${id}`, requestId: ctx.requestId, details: { model_name: input.model_name, provider: input.provider, model: input.model } });
      return view(rows[0]!);
    });
  }

  async replace(id: string, input: ModelInput, ctx: RequestContext): Promise<ModelView> {
    return withTransaction(this.pool, async (c) => {
      await this.assertProvider(c, input.provider);
      const { rows } = await c.query<ModelRow>(
        `UPDATE models SET model_name = $2, provider = $3, model = $4, api_base = $5, rpm = $6, tpm = $7, litellm_params = $8, model_info = $9, updated_at = now()
         WHERE id = $1 RETURNING *`,
        [id, input.model_name, input.provider, input.model, input.api_base ?? null, input.rpm ?? null, input.tpm ?? null, input.litellm_params ?? {}, input.model_info ?? {}],
      );
      if (!rows[0]) throw new NotFound(`model ${id}`);
      await appendAudit(c, { actor: ctx.principal.actor, action: 'model.update', target: `model/${id}`, requestId: ctx.requestId, details: { model_name: input.model_name, provider: input.provider, model: input.model } });
      return view(rows[0]);
    });
  }

  async delete(id: string, ctx: RequestContext): Promise<void> {
    await withTransaction(this.pool, async (c) => {
      const r = await c.query<{ model_name: string }>('DELETE FROM models WHERE id = $1 RETURNING model_name', [id]);
      if (!r.rows[0]) throw new NotFound(`model ${id}`);
      await appendAudit(c, { actor: ctx.principal.actor, action: 'model.delete', target: `model/${id}`, requestId: ctx.requestId, details: { model_name: r.rows[0].model_name } });
    });
  }

  private async assertProvider(c: { query: Pool['query'] }, slug: string): Promise<void> {
    // FOR SHARE keeps a concurrent provider delete from slipping in between the check and the insert.
    const r = await c.query('SELECT 1 FROM providers WHERE slug = $1 FOR SHARE', [slug]);
    if (!r.rowCount) throw new ValidationFailed([{ field: 'provider', rule: `must name an existing provider (${slug} does not exist)` }]);
  }
}
