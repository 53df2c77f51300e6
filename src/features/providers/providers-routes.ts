import { z } from 'zod';
import type { RouteTable } from '../../http/route-table';
import { httpUrl, name, parse } from '../../http/validate';
import { ValidationFailed } from '../../http/errors';
import { cursorParam, limitParam, toPage } from '../../http/paging';
import type { ProvidersService } from './providers-service';

const base = '/api/v1/admin/providers';

export const providerBody = z.strictObject({
  kind: z.string({ error: 'is required and must be a string' }).regex(/^[a-z][a-z0-9_]{0,40}$/, { error: "must be LiteLLM's provider prefix, such as openai, anthropic, gemini, groq, openrouter, together_ai, fireworks_ai, ollama" }),
  api_base: httpUrl().nullable().optional(),
  key_name: name().optional(),
  keys: z
    .array(
      z.strictObject({
        name: name(),
        weight: z.number({ error: 'must be a whole number' }).int({ error: 'must be a whole number' }).min(1, { error: 'must be 1 or more' }).max(1000, { error: 'must be at most 1000' }).optional(),
      }),
      { error: 'must be a list of {"name", "weight"?}' },
    )
    .max(20, { error: 'at most 20 keys' })
    .optional(),
  active: z.boolean({ error: 'must be true or false' }).optional(),
});

const listQuery = z.strictObject({ limit: limitParam(), cursor: cursorParam(name()).optional() });

export function registerProviderRoutes(table: RouteTable, svc: ProvidersService): void {
  const slugOf = (p: Record<string, unknown>): string => {
    const slug = parse(name(), p.slug, 'slug');
    if (slug === 'health') throw new ValidationFailed([{ field: 'slug', rule: 'health is reserved' }]);
    return slug;
  };
  table.add({
    method: 'get', path: base, access: 'viewer', tag: 'providers', summary: 'List providers by slug; paged (?limit=1..1000, ?cursor=)', query: listQuery,
    handler: async (_req, _res, _ctx, q) => toPage(await svc.list({ limit: q.limit, after: q.cursor })),
  });
  table.add({
    method: 'get', path: `${base}/:slug`, access: 'viewer', tag: 'providers', summary: 'One provider', responses: { 404: 'Not found' },
    handler: async (req) => svc.get(slugOf(req.params)),
  });
  table.add({
    method: 'put', path: `${base}/:slug`, access: 'operator', tag: 'providers', body: providerBody, summary: 'Create or update a provider', responses: { 201: 'Created', 400: 'Invalid body' },
    handler: async (req, res, ctx) => {
      const slug = slugOf(req.params);
      const { view, created } = await svc.put(slug, parse(providerBody, req.body), ctx);
      res.status(created ? 201 : 200);
      return view;
    },
  });
  table.add({
    method: 'delete', path: `${base}/:slug`, access: 'operator', tag: 'providers', summary: 'Delete a provider no model uses', responses: { 204: 'Deleted', 404: 'Not found', 409: 'Used by models' },
    handler: async (req, res, ctx) => {
      await svc.delete(slugOf(req.params), ctx);
      res.status(204).end();
    },
  });
}
