import { randomUUID } from 'node:crypto';
import type { Pool, PoolClient } from '../../db/pool';
import { withTransaction } from '../../db/pool';
import type { Fingerprinter } from '../../crypto/keyring';
import { deploymentPairs, type Pair } from '../../destinations';
import { NotFound, ValidationFailed, type FieldError } from '../../http/errors';
import type { RequestContext } from '../../http/principal';
import { isKeyChar, KEY_MIN } from '../../key-rules';
import { appendAudit } from '../audit/audit-store';
import type { DestinationsService } from '../destinations/destinations-service';
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

interface ProviderBinding {
  kind: string;
  api_base: string | null;
  key_name: string;
}

/** Every string of `value` (mapping keys too) with its path, `litellm_params.extra_headers.X`. */
function* stringsWithPaths(value: unknown, at: string, depth = 0): Generator<[string, string]> {
  if (typeof value === 'string') yield [at, value];
  else if (depth > 64 || value === null || typeof value !== 'object') return;
  else if (Array.isArray(value)) for (const [i, v] of value.entries()) yield* stringsWithPaths(v, `${at}[${i}]`, depth + 1);
  else
    for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
      const path = `${at}.${k}`;
      yield [path, k];
      yield* stringsWithPaths(v, path, depth + 1);
    }
}

/** Could be a key value: long enough, and only key characters (anything else can never equal one). */
function keyShaped(s: string): boolean {
  if (s.length < KEY_MIN) return false;
  for (let i = 0; i < s.length; i++) if (!isKeyChar(s.charCodeAt(i))) return false;
  return true;
}

export class ModelsService {
  constructor(
    private readonly pool: Pool,
    private readonly destinations: DestinationsService,
    private readonly fingerprints: Fingerprinter,
  ) {}

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
      const approved = await this.checkDeployment(c, input, ctx);
      const { rows } = await c.query<ModelRow>(
        `INSERT INTO models (id, model_name, provider, model, api_base, rpm, tpm, litellm_params, model_info)
         VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9) RETURNING *`,
        [id, input.model_name, input.provider, input.model, input.api_base ?? null, input.rpm ?? null, input.tpm ?? null, input.litellm_params ?? {}, input.model_info ?? {}],
      );
      await appendAudit(c, { actor: ctx.principal.actor, action: 'model.create', target: `model/${id}`, requestId: ctx.requestId, details: this.auditDetails(input, approved) });
      return view(rows[0]!);
    });
  }

  async replace(id: string, input: ModelInput, ctx: RequestContext): Promise<ModelView> {
    return withTransaction(this.pool, async (c) => {
      const approved = await this.checkDeployment(c, input, ctx);
      const { rows } = await c.query<ModelRow>(
        `UPDATE models SET model_name = $2, provider = $3, model = $4, api_base = $5, rpm = $6, tpm = $7, litellm_params = $8, model_info = $9, updated_at = now()
         WHERE id = $1 RETURNING *`,
        [id, input.model_name, input.provider, input.model, input.api_base ?? null, input.rpm ?? null, input.tpm ?? null, input.litellm_params ?? {}, input.model_info ?? {}],
      );
      if (!rows[0]) throw new NotFound(`model ${id}`);
      await appendAudit(c, { actor: ctx.principal.actor, action: 'model.update', target: `model/${id}`, requestId: ctx.requestId, details: this.auditDetails(input, approved) });
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

  private auditDetails(input: ModelInput, approved: string[]): Record<string, unknown> {
    const details: Record<string, unknown> = { model_name: input.model_name, provider: input.provider, model: input.model };
    if (approved.length) details.approved_destinations = approved;
    return details;
  }

  /**
   * Inside the write's transaction: the provider exists (FOR SHARE keeps a concurrent delete out),
   * os.environ/ references name platform keys and sit where LiteLLM resolves them, no string
   * equals a key's value, and every (key, destination) pair the deployment makes is approved
   * (an admin's write approves them; returns those it approved).
   */
  private async checkDeployment(c: PoolClient, input: ModelInput, ctx: RequestContext): Promise<string[]> {
    const r = await c.query<ProviderBinding>('SELECT kind, api_base, key_name FROM providers WHERE slug = $1 FOR SHARE', [input.provider]);
    const provider = r.rows[0];
    if (!provider) throw new ValidationFailed([{ field: 'provider', rule: `must name an existing provider (${input.provider} does not exist)` }]);
    const errors: FieldError[] = [];
    const params = input.litellm_params ?? {};
    const nested: Array<[string, string]> = [...stringsWithPaths(input.model_info ?? {}, 'model_info')];
    for (const [k, v] of Object.entries(params)) if (typeof v !== 'string') nested.push(...stringsWithPaths(v, `litellm_params.${k}`));
    for (const [field, s] of nested) {
      if (s.startsWith('os.environ/')) errors.push({ field, rule: 'may not hold an os.environ/ reference: LiteLLM resolves them only as top-level litellm_params values' });
    }
    const keyOfEnv = await this.destinations.store.keyOfEnv(c);
    // A pooled provider sends each of its keys: every one makes its own pair with this deployment.
    const pool = (await c.query<{ key_name: string }>('SELECT key_name FROM provider_keys WHERE provider = $1 ORDER BY position', [input.provider])).rows.map((r) => r.key_name);
    const pairs: Pair[] = [];
    let unknownRefs: Array<{ field: string; envVar: string }> = [];
    for (const keyName of pool.length ? pool : [provider.key_name]) {
      const own = deploymentPairs(
        { model: { apiBase: input.api_base ?? null, litellmParams: params }, provider: { kind: provider.kind, apiBase: provider.api_base, keyName }, providerField: 'provider' },
        keyOfEnv,
      );
      pairs.push(...own.pairs);
      unknownRefs = own.unknownRefs;
    }
    for (const u of unknownRefs) errors.push({ field: u.field, rule: `must reference a platform key's env var (${u.envVar} is none)` });
    errors.push(...(await this.secretEquals(c, input)));
    if (errors.length) throw new ValidationFailed(errors);
    return this.destinations.enforce(c, pairs, ctx);
  }

  /** Fields whose string equals the current value of a platform key (compared by HMAC fingerprint, never by value). */
  private async secretEquals(c: PoolClient, input: ModelInput): Promise<FieldError[]> {
    const candidates: Array<[string, string]> = [];
    const fields = { model_name: input.model_name, model: input.model, api_base: input.api_base, litellm_params: input.litellm_params ?? {}, model_info: input.model_info ?? {} };
    for (const [name, value] of Object.entries(fields)) {
      for (const [field, s] of stringsWithPaths(value, name)) if (keyShaped(s)) candidates.push([field, this.fingerprints.of(s)]);
    }
    if (candidates.length === 0) return [];
    const { rows } = await c.query<{ fingerprint: string }>(
      `SELECT v.fingerprint FROM platform_keys k JOIN platform_key_versions v ON v.name = k.name AND v.version = k.current_version
       WHERE v.fingerprint = ANY($1::text[])`,
      [[...new Set(candidates.map(([, fp]) => fp))]],
    );
    const hits = new Set(rows.map((r) => r.fingerprint));
    return candidates.filter(([, fp]) => hits.has(fp)).map(([field]) => ({ field, rule: 'must not hold the value of a platform key: reference the key instead' }));
  }
}
