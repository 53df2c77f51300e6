import { z } from 'zod';
import type { RouteTable } from '../../http/route-table';
import { apiKey, envVar, name, parse, queryString, timestamp } from '../../http/validate';
import { parseDuration } from '../../duration';
import type { KeyState } from '../../sync/desired-state';
import { cursorParam, limitParam, toPage } from '../../http/paging';
import { etag, parseIfMatch, type PlatformKeysService } from './platform-keys-service';

const base = '/api/v1/admin/platform-keys';

export const putKeyBody = z.strictObject({
  api_key: apiKey(),
  env_var: envVar().optional(),
  expires_at: timestamp().nullable().optional(),
  validate: z.boolean({ error: 'must be true or false' }).optional(),
});

const KEY_STATES: readonly KeyState[] = ['active', 'cooling', 'disabled', 'retiring'];

/** `?state=disabled` or `?state=disabled,retiring`. */
const stateParam = queryString().transform((raw, ctx): KeyState[] => {
  const states = [...new Set(raw.split(','))];
  const bad = states.filter((s) => !KEY_STATES.includes(s as KeyState));
  if (bad.length || states.length === 0) {
    ctx.addIssue({ code: 'custom', message: `must be one or more of ${KEY_STATES.join(', ')}, separated by commas` });
    return z.NEVER;
  }
  return states as KeyState[];
});

/** `?older_than=90d`: a duration with its unit. */
const durationParam = queryString().transform((raw, ctx): number => {
  const d = parseDuration(raw);
  if ('problem' in d) {
    ctx.addIssue({ code: 'custom', message: d.problem });
    return z.NEVER;
  }
  return d.ms;
});

const listQuery = z.strictObject({
  limit: limitParam(),
  cursor: cursorParam(name()).optional(),
  state: stateParam.optional().meta({ description: 'only keys in these states (comma-separated): active, cooling, disabled, retiring' }),
  older_than: durationParam.optional().meta({ description: 'only keys whose current version was written longer ago than this (90d, 12h)' }),
  provider: queryString(name()).optional().meta({ description: "only keys in this provider's pool" }),
});
const versionsQuery = z.strictObject({ limit: limitParam(), cursor: cursorParam(z.number().int().positive()).optional() });

const rollbackBody = z.strictObject({
  version: z.number({ error: 'is required and must be a whole number' }).int({ error: 'must be a whole number' }).positive({ error: 'must be 1 or more' }),
});

export function registerPlatformKeyRoutes(table: RouteTable, svc: PlatformKeysService): void {
  const keyName = (p: Record<string, unknown>): string => parse(name(), p.name, 'name');
  table.add({
    method: 'get', path: base, access: 'viewer', tag: 'platform-keys',
    summary: 'List platform keys (masked), by name; paged (?limit=1..1000, ?cursor=); filtered by ?state=, ?older_than=, ?provider=',
    query: listQuery,
    handler: async (_req, _res, _ctx, q) => toPage(await svc.list({ limit: q.limit, after: q.cursor }, { states: q.state, olderThanMs: q.older_than, provider: q.provider })),
  });
  table.add({
    method: 'get', path: `${base}/:name`, access: 'viewer', tag: 'platform-keys', summary: 'One platform key (masked)', responses: { 404: 'Not found' },
    handler: async (req, res) => {
      const view = await svc.get(keyName(req.params));
      res.setHeader('ETag', etag(view.version));
      return view;
    },
  });
  table.add({
    method: 'put', path: `${base}/:name`, access: 'operator', tag: 'platform-keys', body: putKeyBody,
    summary: 'Create or rotate a platform key (a new version); If-Match: "<version>" guards against lost updates',
    responses: { 400: 'Invalid body', 409: 'env var taken', 412: 'Stale If-Match', 422: 'Provider refused the key (validate)' },
    handler: async (req, res, ctx) => {
      const n = keyName(req.params);
      const body = parse(putKeyBody, req.body);
      const view = await svc.put(n, body, ctx, parseIfMatch(req.get('if-match')));
      res.setHeader('ETag', etag(view.version));
      return view;
    },
  });
  table.add({
    method: 'get', path: `${base}/:name/decrypted`, access: 'admin', tag: 'platform-keys', summary: 'The decrypted key (audited)', responses: { 404: 'Not found' },
    handler: async (req, res, ctx) => {
      res.setHeader('Cache-Control', 'no-store');
      return svc.decrypted(keyName(req.params), ctx);
    },
  });
  table.add({
    method: 'get', path: `${base}/:name/versions`, access: 'viewer', tag: 'platform-keys', summary: 'Every version of a key (masked), newest first; paged (?limit=1..1000, ?cursor=)',
    query: versionsQuery,
    handler: async (req, _res, _ctx, q) => toPage(await svc.versions(keyName(req.params), { limit: q.limit, after: q.cursor })),
  });
  table.add({
    method: 'post', path: `${base}/:name/rollback`, access: 'operator', tag: 'platform-keys', body: rollbackBody,
    summary: 'Write the value of an earlier version as a new version', responses: { 404: 'No such version', 412: 'Stale If-Match' },
    handler: async (req, res, ctx) => {
      const body = parse(rollbackBody, req.body);
      const view = await svc.rollback(keyName(req.params), body.version, ctx, parseIfMatch(req.get('if-match')));
      res.setHeader('ETag', etag(view.version));
      return view;
    },
  });
  table.add({
    method: 'delete', path: `${base}/:name`, access: 'operator', tag: 'platform-keys', summary: 'Delete a key and its versions', responses: { 204: 'Deleted', 404: 'Not found', 412: 'Stale If-Match' },
    handler: async (req, res, ctx) => {
      await svc.delete(keyName(req.params), ctx, parseIfMatch(req.get('if-match')));
      res.status(204).end();
    },
  });
}
