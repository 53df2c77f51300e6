import { z } from 'zod';
import { isDestinationParam } from '../../destinations';
import type { RouteTable } from '../../http/route-table';
import { httpUrl, name, parse, queryString } from '../../http/validate';
import { cursorParam, limitParam, toPage } from '../../http/paging';
import { jsonBoundsIssues, type JsonBounds } from '../../http/json-bounds';
import { scrubSecrets } from '../../secret-params';
import type { ModelsService } from './models-service';

const base = '/api/v1/admin/models';
const modelName = () => z.string({ error: 'is required and must be a string' }).regex(/^[\x21-\x7e]{1,200}$/, { error: 'must be 1 to 200 printable characters without spaces' });
const limit = () => z.number({ error: 'must be a whole number' }).int({ error: 'must be a whole number' }).min(1, { error: 'must be 1 or more' }).max(100_000_000, { error: 'must be at most 100000000' }).nullable().optional();
const MODEL_ID = z.uuid({ error: 'must be a model id (UUID)' });
const MANAGED_PARAMS = new Set(['model', 'api_key', 'api_base', 'rpm', 'tpm']);

/** What litellm_params and model_info may hold (see JsonBounds): every accepted value renders and loads in PyYAML. */
export const MODEL_JSON_BOUNDS: JsonBounds = { depth: 16, keyLength: 128, stringLength: 8192, entries: 256 };
/** litellm_params and model_info of one deployment together, as JSON (UTF-8 bytes). */
export const MODEL_PARAMS_BYTES = 16 * 1024;

const freeForm = () =>
  z.record(z.string(), z.unknown(), { error: 'must be an object' }).superRefine((v, ctx) => {
    // Not continued: the secret scan below walks the whole value and must not see an unbounded one.
    for (const i of jsonBoundsIssues(v, MODEL_JSON_BOUNDS)) ctx.addIssue({ code: 'custom', path: i.path, message: i.message, continue: false });
  });

export const modelBody = z
  .strictObject({
    model_name: modelName(),
    provider: name(),
    model: z.string({ error: 'is required and must be a string' }).regex(/^[\x21-\x7e]{1,300}$/, { error: 'must be the upstream model id (1 to 300 printable characters, no spaces)' }),
    api_base: httpUrl().nullable().optional(),
    rpm: limit(),
    tpm: limit(),
    litellm_params: freeForm().optional(),
    model_info: freeForm().optional(),
  })
  .superRefine((b, ctx) => {
    const bytes = Buffer.byteLength(JSON.stringify(b.litellm_params ?? {})) + Buffer.byteLength(JSON.stringify(b.model_info ?? {}));
    if (bytes > MODEL_PARAMS_BYTES) {
      ctx.addIssue({ code: 'custom', path: ['litellm_params'], message: `together with model_info holds ${bytes} bytes of JSON: at most ${MODEL_PARAMS_BYTES}` });
    }
    // Keys belong in platform keys: at any depth, a field named like a credential (api_key,
    // aws_secret_access_key, extra_headers.Authorization, ...) may only be an os.environ/ reference.
    for (const field of ['litellm_params', 'model_info'] as const) {
      const secrets: string[] = [];
      scrubSecrets(b[field] ?? {}, secrets);
      for (const path of secrets) ctx.addIssue({ code: 'custom', path: [field, path], message: 'must not hold a raw secret: store it as a platform key (or use os.environ/VAR)' });
    }
    for (const k of Object.keys(b.litellm_params ?? {})) {
      if (MANAGED_PARAMS.has(k)) ctx.addIssue({ code: 'custom', path: ['litellm_params', k], message: 'is managed by keyplane: set it with the top-level field instead' });
      else if (isDestinationParam(k)) {
        ctx.addIssue({ code: 'custom', path: ['litellm_params', k], message: "chooses where requests and their key go: set the model's api_base instead (an admin approves its host)" });
      }
      // Names every JavaScript object inherits are no LiteLLM parameters.
      else if (k in Object.prototype) ctx.addIssue({ code: 'custom', path: ['litellm_params', k], message: 'is not a LiteLLM parameter (a name JavaScript objects inherit)' });
    }
  });

// sql/006_input_limits.sql holds the totals.
const LIMITS =
  `litellm_params and model_info: nesting <= ${MODEL_JSON_BOUNDS.depth}, keys <= ${MODEL_JSON_BOUNDS.keyLength} characters, strings <= ${MODEL_JSON_BOUNDS.stringLength}, ` +
  `<= ${MODEL_JSON_BOUNDS.entries} entries per object or array, <= ${MODEL_PARAMS_BYTES} bytes of JSON together; at most 5000 deployments and 8 MiB of them in all`;

const listQuery = z.strictObject({
  limit: limitParam(),
  cursor: cursorParam(z.tuple([z.string().max(200), z.number().int(), z.uuid()])).optional(),
  provider: queryString(name()).optional(),
  model_name: queryString(modelName()).optional(),
});

export function registerModelRoutes(table: RouteTable, svc: ModelsService): void {
  const idOf = (p: Record<string, unknown>): string => parse(MODEL_ID, p.id, 'id');
  table.add({
    method: 'get', path: base, access: 'viewer', tag: 'models', summary: 'List model deployments (filter by ?provider= or ?model_name=); paged (?limit=1..1000, ?cursor=)',
    query: listQuery,
    handler: async (_req, _res, _ctx, q) => toPage(await svc.list({ provider: q.provider, model_name: q.model_name }, { limit: q.limit, after: q.cursor })),
  });
  table.add({
    method: 'post', path: base, access: 'operator', tag: 'models', body: modelBody, summary: `Add a model deployment (${LIMITS})`,
    responses: { 201: 'Created', 400: 'Invalid body or unknown provider', 409: 'At the limit of deployments or of their total size' },
    handler: async (req, res, ctx) => {
      res.status(201);
      return svc.create(parse(modelBody, req.body), ctx);
    },
  });
  table.add({ method: 'get', path: `${base}/:id`, access: 'viewer', tag: 'models', summary: 'One model deployment', handler: async (req) => svc.get(idOf(req.params)) });
  table.add({
    method: 'put', path: `${base}/:id`, access: 'operator', tag: 'models', body: modelBody, summary: `Replace a model deployment (${LIMITS})`,
    handler: async (req, _res, ctx) => svc.replace(idOf(req.params), parse(modelBody, req.body), ctx),
  });
  table.add({
    method: 'delete', path: `${base}/:id`, access: 'operator', tag: 'models', summary: 'Delete a model deployment', responses: { 204: 'Deleted' },
    handler: async (req, res, ctx) => {
      await svc.delete(idOf(req.params), ctx);
      res.status(204).end();
    },
  });
}
