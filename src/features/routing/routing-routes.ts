import { z } from 'zod';
import type { Pool } from '../../db/pool';
import { withTransaction } from '../../db/pool';
import type { RouteTable } from '../../http/route-table';
import { parse } from '../../http/validate';
import { appendAudit } from '../audit/audit-store';

const modelRef = () => z.string({ error: 'must be a model name' }).regex(/^[\x21-\x7e]{1,200}$/, { error: 'must be a model name (1 to 200 printable characters, no spaces)' });

/** Entries of aliases, and of fallbacks: the routing document is rendered whole into config.yaml. */
export const ROUTING_ENTRIES = 1000;
const atMost = (v: Record<string, unknown>, ctx: z.RefinementCtx): void => {
  if (Object.keys(v).length > ROUTING_ENTRIES) ctx.addIssue({ code: 'custom', message: `must have at most ${ROUTING_ENTRIES} entries` });
};

export const routingBody = z
  .strictObject({
    aliases: z.record(modelRef(), modelRef(), { error: 'must be an object of alias -> model name' }).superRefine(atMost).default({}),
    fallbacks: z
      .record(modelRef(), z.array(modelRef(), { error: 'must be a list of model names' }).max(20, { error: 'must list at most 20 fallbacks' }), { error: 'must be an object of model -> [fallback models]' })
      .superRefine(atMost)
      .default({}),
  })
  .superRefine(
    (b, ctx) => {
      for (const [alias, target] of Object.entries(b.aliases ?? {})) {
        if (alias === target) ctx.addIssue({ code: 'custom', path: ['aliases', alias], message: 'must not point to itself' });
      }
      for (const [model, list] of Object.entries(b.fallbacks ?? {})) {
        if (Array.isArray(list) && list.includes(model)) ctx.addIssue({ code: 'custom', path: ['fallbacks', model], message: 'must not list the model itself' });
      }
    },
    // Report these together with shape errors elsewhere in the body, not only once the rest is valid.
    { when: (p) => typeof p.value === 'object' && p.value !== null },
  );

interface RoutingRow {
  aliases: Record<string, string>;
  fallbacks: Record<string, string[]>;
  version: number;
  updated_at: Date;
}

export function registerRoutingRoutes(table: RouteTable, pool: Pool): void {
  const path = '/api/v1/admin/routing';
  table.add({
    method: 'get', path, access: 'viewer', tag: 'routing', summary: 'Model group aliases and fallbacks',
    handler: async () => (await pool.query<RoutingRow>('SELECT aliases, fallbacks, version, updated_at FROM routing WHERE id = 1')).rows[0],
  });
  table.add({
    method: 'put', path, access: 'operator', tag: 'routing', body: routingBody, summary: 'Replace aliases and fallbacks',
    handler: async (req, _res, ctx) => {
      const body = parse(routingBody, req.body);
      return withTransaction(pool, async (c) => {
        const { rows } = await c.query<RoutingRow>(
          'UPDATE routing SET aliases = $1, fallbacks = $2, version = version + 1, updated_at = now() WHERE id = 1 RETURNING aliases, fallbacks, version, updated_at',
          [body.aliases, body.fallbacks],
        );
        await appendAudit(c, {
          actor: ctx.principal.actor,
          action: 'routing.put',
          target: 'routing',
          version: rows[0]!.version,
          requestId: ctx.requestId,
          details: { aliases: Object.keys(body.aliases).length, fallbacks: Object.keys(body.fallbacks).length },
        });
        return rows[0];
      });
    },
  });
}
