import type { PoolClient } from '../db/pool';
import { AppError, ValidationFailed } from '../http/errors';
import type { RequestContext } from '../http/principal';
import { parse } from '../http/validate';
import { appendAudit } from '../features/audit/audit-store';
import type { PlatformKeysService } from '../features/platform-keys/platform-keys-service';
import type { ProvidersService } from '../features/providers/providers-service';
import type { ModelsService, ModelView } from '../features/models/models-service';
import { routingBody } from '../features/routing/routing-routes';
import type { PlannedModel, PlannedProvider } from './deployments';
import type { PlannedRouting } from './settings';
import type { ExistingState, PlannedKey, Planner } from './planner';
import { pathText, type ImportProblem, type YamlPath } from './source';

export interface Services {
  keys: PlatformKeysService;
  providers: ProvidersService;
  models: ModelsService;
}

export interface Plan {
  keys: PlannedKey[];
  providers: PlannedProvider[];
  models: PlannedModel[];
  routing?: PlannedRouting;
}

export interface Applied {
  keysWritten: string[];
  providers: string[];
  models: number;
  modelsSkipped: number;
  routing: boolean;
}

/**
 * Writes the plan through the same services as the API (so every rule holds, and the admin's writes
 * approve the (key, destination) pairs they make), each write a savepoint of the caller's one
 * transaction. A refused write is a problem at its place in the files; the caller rolls everything
 * back when there is any.
 */
export async function applyPlan(
  p: Planner,
  plan: Plan,
  svc: Services,
  client: PoolClient,
  existing: ExistingState & { models: ModelView[] },
  ctx: RequestContext,
): Promise<Applied> {
  const out: Applied = { keysWritten: [], providers: [], models: 0, modelsSkipped: 0, routing: false };
  const refused = (err: unknown, at: (field: string) => Omit<ImportProblem, 'rule'>): void => {
    if (!(err instanceof AppError)) throw err;
    const errors = err instanceof ValidationFailed ? err.errors : [{ field: '', rule: err.message }];
    for (const e of errors) p.problems.push({ ...at(e.field), rule: e.rule });
  };
  const inConfig = (path: YamlPath): Omit<ImportProblem, 'rule'> => ({ file: p.src?.file ?? '(config)', line: p.src?.lineOf(path), field: pathText(path) });

  for (const k of plan.keys) {
    const stored = existing.keys.find((s) => s.name === k.name);
    if (stored && stored.value === k.value && stored.env_var === k.envVar) continue;
    try {
      await svc.keys.put(k.name, { api_key: k.value, ...(stored?.env_var === k.envVar ? {} : { env_var: k.envVar }) }, ctx);
      out.keysWritten.push(k.name);
    } catch (err) {
      refused(err, (field) => ({ ...k.from, field: field ? `${k.from.field} (${field} of platform key ${k.name})` : k.from.field }));
    }
  }
  for (const pr of plan.providers) {
    try {
      await svc.providers.put(pr.slug, { kind: pr.kind, key_name: pr.keyName, ...(pr.apiBase !== undefined ? { api_base: pr.apiBase } : {}) }, ctx);
      out.providers.push(pr.slug);
    } catch (err) {
      refused(err, () => ({ ...inConfig(pr.at), field: `${pathText(pr.at)} (provider ${pr.slug})` }));
    }
  }
  const models = [...existing.models];
  for (const m of plan.models) {
    const i = m.input;
    if (models.some((e) => e.model_name === i.model_name && e.provider === i.provider && e.model === i.model)) {
      out.modelsSkipped++;
      continue;
    }
    try {
      models.push(await svc.models.create(i, ctx));
      out.models++;
    } catch (err) {
      refused(err, (field) => inConfig(field ? m.pathOf(field) : m.at));
    }
  }
  if (plan.routing) out.routing = await applyRouting(p, plan.routing, client, ctx);
  return out;
}

/** Merges the imported aliases and fallbacks into the stored ones (the imported entry wins); unchanged routing is not written. */
async function applyRouting(p: Planner, r: PlannedRouting, client: PoolClient, ctx: RequestContext): Promise<boolean> {
  const cur = (await client.query<{ aliases: Record<string, string>; fallbacks: Record<string, string[]> }>('SELECT aliases, fallbacks FROM routing WHERE id = 1 FOR UPDATE')).rows[0]!;
  let next: { aliases: Record<string, string>; fallbacks: Record<string, string[]> };
  try {
    next = parse(routingBody, { aliases: { ...cur.aliases, ...r.aliases }, fallbacks: { ...cur.fallbacks, ...r.fallbacks } });
  } catch (err) {
    if (!(err instanceof ValidationFailed)) throw err;
    for (const e of err.errors) p.problemAt(r.pathOf(e.field), `together with the stored routing: ${e.rule}`);
    return false;
  }
  if (JSON.stringify(sorted(next)) === JSON.stringify(sorted(cur))) return false;
  const { rows } = await client.query<{ version: number }>('UPDATE routing SET aliases = $1, fallbacks = $2, version = version + 1, updated_at = now() WHERE id = 1 RETURNING version', [next.aliases, next.fallbacks]);
  await appendAudit(client, {
    actor: ctx.principal.actor,
    action: 'routing.import',
    target: 'routing',
    version: rows[0]!.version,
    requestId: ctx.requestId,
    details: { aliases: Object.keys(next.aliases).length, fallbacks: Object.keys(next.fallbacks).length },
  });
  return true;
}

function sorted(r: { aliases: Record<string, string>; fallbacks: Record<string, string[]> }): unknown {
  const byKey = <T>(o: Record<string, T>): Array<[string, T]> => Object.entries(o).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return [byKey(r.aliases), byKey(r.fallbacks)];
}
