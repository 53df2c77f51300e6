import { z } from 'zod';
import { parseDuration } from '../../duration';
import { jsonBoundsIssues, type JsonBounds } from '../../http/json-bounds';
import { cursorParam, limitParam, toPage } from '../../http/paging';
import type { RouteTable } from '../../http/route-table';
import { durationAtMost, idempotencyKey, parse } from '../../http/validate';
import { GRACE_MAX_MS, replayMessage, type VirtualKeyRotations } from './virtual-key-rotations';
import { OP_FIELD, type VirtualKeysService } from './virtual-keys-service';

const base = '/api/v1/admin/virtual-keys';

// LiteLLM's own rule for aliases (_KEY_ALIAS_PATTERN), kept to 100 characters and without `/`, so it is also one path segment.
const ALIAS_RE = /^[A-Za-z0-9](?:[A-Za-z0-9_.@-]{0,98}[A-Za-z0-9])?$/;
const alias = z
  .string({ error: 'is required and must be a string' })
  .regex(ALIAS_RE, { error: 'must be 1 to 100 letters, digits and _ . @ -, starting and ending with a letter or digit' })
  // The alias an old key carries in LiteLLM while it retires.
  .refine((a) => !/\.retiring-\d+$/.test(a), { error: 'must not end in .retiring-<number> (keyplane names retiring keys so)' });

// LiteLLM reads these itself (duration_in_seconds): its units, not keyplane's.
const litellmDuration = z.string({ error: 'must be a string' }).regex(/^[1-9]\d{0,5}(s|m|h|d|w|mo)$/, { error: 'must be a duration LiteLLM reads: a whole number and s, m, h, d, w or mo (30d)' });
const amount = z.number({ error: 'must be a number' }).min(0, { error: 'must be 0 or more' }).max(1e12, { error: 'must be at most 1e12' });
const limit = z.number({ error: 'must be a whole number' }).int({ error: 'must be a whole number' }).min(0, { error: 'must be 0 or more' }).max(1e12, { error: 'must be at most 1e12' });
const models = z
  .array(z.string({ error: 'must be a string' }).regex(/^[\x21-\x7e]{1,256}$/, { error: 'must be a model name (1 to 256 printable characters, no spaces)' }), { error: 'must be an array of model names' })
  .max(100, { error: 'must name at most 100 models' })
  .refine((m) => new Set(m).size === m.length, { error: 'must not name a model twice' });

/** What a key's metadata may hold: LiteLLM keeps it as JSON, keyplane shows it back. */
const METADATA_BOUNDS: JsonBounds = { depth: 8, keyLength: 128, stringLength: 2048, entries: 64 };
const METADATA_BYTES = 8 * 1024;
const metadata = z.record(z.string(), z.unknown(), { error: 'must be an object' }).superRefine((v, ctx) => {
  for (const i of jsonBoundsIssues(v, METADATA_BOUNDS)) ctx.addIssue({ code: 'custom', path: i.path, message: i.message, continue: false });
  if (Buffer.byteLength(JSON.stringify(v)) > METADATA_BYTES) ctx.addIssue({ code: 'custom', message: `must be at most ${METADATA_BYTES} bytes as JSON` });
  if (OP_FIELD in v) ctx.addIssue({ code: 'custom', path: [OP_FIELD], message: 'is keyplane\'s own field' });
});

const createBody = z.strictObject({
  alias,
  models: models.optional(),
  max_budget: amount.nullable().optional(),
  budget_duration: litellmDuration.nullable().optional(),
  rpm_limit: limit.nullable().optional(),
  tpm_limit: limit.nullable().optional(),
  duration: litellmDuration.nullable().optional(),
  metadata: metadata.optional(),
});

const updateBody = z
  .strictObject({
    models: models.optional(),
    max_budget: amount.nullable().optional(),
    // LiteLLM ignores a null budget_duration: it can be changed, not taken away.
    budget_duration: litellmDuration.optional(),
    rpm_limit: limit.nullable().optional(),
    tpm_limit: limit.nullable().optional(),
    duration: litellmDuration.nullable().optional(),
    metadata: metadata.optional(),
  })
  .refine((b) => Object.keys(b).length > 0, { error: 'must change at least one of models, max_budget, budget_duration, rpm_limit, tpm_limit, duration, metadata' });

const GRACE_DEFAULT = '24h';
const grace = durationAtMost(GRACE_MAX_MS, '24h');
const rotateBody = z.strictObject({ grace_period: grace.optional() });

const listQuery = z.strictObject({ limit: limitParam(), cursor: cursorParam(z.string()).optional() });

const SHOWN_ONCE = "this is the only time the key is shown: keyplane keeps only LiteLLM's hash of it (token)";

/**
 * Virtual keys. Who may do what: a virtual key is a credential to LiteLLM, which spends on every
 * provider key behind it. Making one (create, rotate) hands the caller a working credential, and
 * widening one (PATCH: models, budgets, limits) lets its holder spend more: that is reading and
 * steering secrets, so an admin's. Deleting one only takes access away (as switching a provider
 * off does), so an operator may, to cut off a leaked client key at once. Viewers see records,
 * never keys.
 */
export function registerVirtualKeyRoutes(table: RouteTable, deps: { keys: VirtualKeysService; rotations: VirtualKeyRotations }): void {
  const { keys, rotations } = deps;
  const aliasOf = (p: Record<string, unknown>): string => parse(alias, p.alias, 'alias');
  table.add({
    method: 'post', path: base, access: 'admin', tag: 'virtual-keys', body: createBody,
    summary: "Create a LiteLLM virtual key (`/key/generate`). 201 with the key, shown this once; keyplane keeps the alias, LiteLLM's hash of the key and the settings",
    responses: { 201: 'Created: `key` is shown only here', 409: 'Alias taken, or LiteLLM has no database', 422: 'LiteLLM refused the settings', 502: 'LiteLLM failed or refused keyplane' },
    handler: async (req, res, ctx) => {
      const b = parse(createBody, req.body);
      const { key, view } = await keys.create(dropNulls(b), ctx);
      res.status(201).setHeader('Location', `${base}/${view.alias}`);
      return { key, ...view, message: SHOWN_ONCE };
    },
  });
  table.add({
    method: 'get', path: base, access: 'viewer', tag: 'virtual-keys', query: listQuery,
    summary: "Virtual keys by alias, reconciled with LiteLLM's /key/list (`status`: active, gone when deleted in LiteLLM, unknown when LiteLLM cannot be asked) with spend and budget; paged (?limit=1..1000, ?cursor=)",
    handler: async (_req, _res, _ctx, q) => toPage(await keys.list({ limit: q.limit, after: q.cursor })),
  });
  table.add({
    method: 'get', path: `${base}/:alias`, access: 'viewer', tag: 'virtual-keys', responses: { 404: 'Not found' },
    summary: "One virtual key, with LiteLLM's spend and budget (`/key/info`) and earlier keys still in their grace period",
    handler: async (req) => keys.get(aliasOf(req.params)),
  });
  table.add({
    method: 'patch', path: `${base}/:alias`, access: 'admin', tag: 'virtual-keys', body: updateBody,
    summary: 'Change budgets and limits (`/key/update`), of the key and of earlier keys still in their grace period',
    responses: { 404: 'Not found', 409: 'Being created or rotated, gone from LiteLLM, or LiteLLM has no database', 422: 'LiteLLM refused the settings', 502: 'LiteLLM failed' },
    handler: async (req, _res, ctx) => keys.update(aliasOf(req.params), parse(updateBody, req.body), ctx),
  });
  table.add({
    method: 'delete', path: `${base}/:alias`, access: 'operator', tag: 'virtual-keys',
    summary: 'Delete the key in LiteLLM (`/key/delete`, with earlier keys still in their grace period), then the record. 204',
    responses: { 204: 'Deleted', 404: 'Not found', 409: 'Being created or rotated, or LiteLLM has no database', 502: 'LiteLLM failed' },
    handler: async (req, res, ctx) => {
      await keys.delete(aliasOf(req.params), ctx);
      res.status(204).end();
    },
  });
  table.add({
    method: 'post', path: `${base}/:alias/rotate`, access: 'admin', tag: 'virtual-keys', body: rotateBody,
    summary:
      'Rotate with overlap: a new key with the same settings (shown this once) takes the alias; the old one stays valid for `grace_period` (default 24h, at most 30d), ' +
      "then keyplane deletes it in LiteLLM. Idempotency-Key honoured: a retry answers 200 with the same rotation, `key` null (it is shown once)",
    responses: { 201: 'Rotated: `key` is shown only here', 200: 'A retry with the same Idempotency-Key: the same rotation, without the key', 404: 'Not found', 409: 'Being created or rotated, gone from LiteLLM, or LiteLLM has no database', 422: 'Idempotency-Key reused with another request' },
    handler: async (req, res, ctx) => {
      const a = aliasOf(req.params);
      const key = idempotencyKey(req.get('idempotency-key'));
      const b = parse(rotateBody, req.body ?? {});
      const out = await rotations.rotate(a, b.grace_period ?? (parseDuration(GRACE_DEFAULT) as { ms: number }).ms, ctx, key);
      res.setHeader('Location', `${base}/${a}`);
      if (out.replayed) {
        res.status(200).setHeader('Idempotent-Replayed', 'true');
        return { key: null, ...(out.view ?? { alias: a }), rotation: out.rotation, replayed: true, message: replayMessage(out.rotation) };
      }
      res.status(201);
      return { key: out.key, ...out.view, rotation: out.rotation, message: `${SHOWN_ONCE}; the old key stays valid until ${out.rotation.delete_at}` };
    },
  });
}

/** A null on create means the same as leaving the setting out. */
function dropNulls<T extends Record<string, unknown>>(b: T): { [K in keyof T]: Exclude<T[K], null> } {
  return Object.fromEntries(Object.entries(b).filter(([, v]) => v !== null)) as { [K in keyof T]: Exclude<T[K], null> };
}
