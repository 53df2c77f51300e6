import { z } from 'zod';
import { cursorParam, limitParam, toPage } from '../../http/paging';
import type { RouteTable } from '../../http/route-table';
import { apiKey, durationAtMost, envVar, idempotencyKey, name, parse, timestamp } from '../../http/validate';
import { GRACE_MAX_MS, type RotationService } from './rotation-service';

const base = '/api/v1/admin/providers/:slug';

const grace = durationAtMost(GRACE_MAX_MS, '10m');

const rotateBody = z.strictObject({
  api_key: apiKey(),
  replaces: name().optional(),
  grace: grace.optional(),
  name: name().optional(),
  env_var: envVar().optional(),
  expires_at: timestamp().nullable().optional(),
});

const listQuery = z.strictObject({ limit: limitParam(), cursor: cursorParam(z.number().int().positive()).optional() });

export function registerRotationRoutes(table: RouteTable, svc: RotationService): void {
  const slugOf = (p: Record<string, unknown>): string => parse(name(), p.slug, 'slug');
  table.add({
    method: 'post', path: `${base}/rotate`, access: 'operator', tag: 'providers', body: rotateBody,
    summary:
      'Rotate a key without a gap: validate the new key with the provider, add it beside the old one, and once LiteLLM serves it retire the old key ' +
      '(out of the files after `grace`, default 10m). 202 with the steps so far; Idempotency-Key honoured',
    responses: { 202: 'Rotation under way', 403: 'Destination not approved', 404: 'No such provider', 409: 'Key exists, pool full, or a rotation of that key is open', 422: 'The provider refused the new key, or Idempotency-Key reused' },
    handler: async (req, res, ctx) => {
      const slug = slugOf(req.params);
      const key = idempotencyKey(req.get('idempotency-key'));
      const body = parse(rotateBody, req.body);
      const { view, replayed } = await svc.rotate(slug, { ...body, graceMs: body.grace }, ctx, key);
      res.status(202).setHeader('Location', `/api/v1/admin/providers/${slug}/rotations/${view.rotation_id}`);
      if (replayed) res.setHeader('Idempotent-Replayed', 'true');
      return view;
    },
  });
  table.add({
    method: 'get', path: `${base}/rotations`, access: 'viewer', tag: 'providers', query: listQuery,
    summary: "A provider's rotations, newest first, with their steps; paged (?limit=1..1000, ?cursor=)",
    handler: async (req, _res, _ctx, q) => toPage(await svc.list(slugOf(req.params), { limit: q.limit, after: q.cursor })),
  });
  table.add({
    method: 'get', path: `${base}/rotations/:id`, access: 'viewer', tag: 'providers',
    summary: 'One rotation: its status and every step so far (validated, added, rendered, served, retiring, removed, or failed)', responses: { 404: 'Not found' },
    handler: async (req) => {
      const id = parse(z.string().regex(/^\d{1,15}$/, { error: 'must be a rotation id' }).transform(Number), req.params.id, 'id');
      return svc.get(slugOf(req.params), id);
    },
  });
}
