import { z } from 'zod';
import { formatDuration, parseDuration } from '../../duration';
import { ValidationFailed } from '../../http/errors';
import { cursorParam, limitParam, toPage } from '../../http/paging';
import type { RouteTable } from '../../http/route-table';
import { apiKey, envVar, name, parse, timestamp } from '../../http/validate';
import { GRACE_MAX_MS, type RotationService } from './rotation-service';

const base = '/api/v1/admin/providers/:slug';

const grace = z.string({ error: 'must be a duration such as 10m' }).transform((raw, ctx): number => {
  const d = parseDuration(raw);
  if ('problem' in d) ctx.addIssue({ code: 'custom', message: d.problem });
  else if (d.ms > GRACE_MAX_MS) ctx.addIssue({ code: 'custom', message: `must be at most ${formatDuration(GRACE_MAX_MS)}` });
  else return d.ms;
  return z.NEVER;
});

const rotateBody = z.strictObject({
  api_key: apiKey(),
  replaces: name().optional(),
  grace: grace.optional(),
  name: name().optional(),
  env_var: envVar().optional(),
  expires_at: timestamp().nullable().optional(),
});

const listQuery = z.strictObject({ limit: limitParam(), cursor: cursorParam(z.number().int().positive()).optional() });

// Printable ASCII, as the IETF draft's examples: it is stored and shown back in errors.
const IDEMPOTENCY_KEY = /^[\x21-\x7e]{1,255}$/;

function idempotencyKey(header: string | undefined): string | undefined {
  if (header === undefined) return undefined;
  if (!IDEMPOTENCY_KEY.test(header)) throw new ValidationFailed([{ field: 'Idempotency-Key', rule: 'must be 1 to 255 printable ASCII characters without spaces' }]);
  return header;
}

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
