import { z } from 'zod';
import type { RouteTable } from '../../http/route-table';
import { parse } from '../../http/validate';
import { cursorParam, limitParam, toPage } from '../../http/paging';
import type { TokensStore } from './tokens-store';

export const tokenBody = z.strictObject({
  name: z.string({ error: 'is required and must be a string' }).regex(/^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$/, { error: 'must be 1 to 64 letters, digits, _ . @ -' }),
  role: z.enum(['admin', 'operator', 'viewer'], { error: 'must be admin, operator or viewer' }),
});

const TOKEN_ID = z.uuid({ error: 'must be a token id (UUID)' });
const listQuery = z.strictObject({ limit: limitParam(), cursor: cursorParam(z.tuple([z.number().int(), z.uuid()])).optional() });

export function registerTokenRoutes(table: RouteTable, store: TokensStore): void {
  const base = '/api/v1/admin/tokens';
  table.add({
    method: 'get', path: base, access: 'admin', tag: 'tokens', summary: 'List API tokens (never the token itself), oldest first; paged (?limit=1..1000, ?cursor=)', query: listQuery,
    handler: async (_req, _res, _ctx, q) => toPage(await store.list({ limit: q.limit, after: q.cursor })),
  });
  table.add({
    method: 'post', path: base, access: 'admin', tag: 'tokens', body: tokenBody, summary: 'Create an API token; the token is shown once', responses: { 201: 'Created' },
    handler: async (req, res, ctx) => {
      const body = parse(tokenBody, req.body);
      const { token, row } = await store.create(body.name, body.role, ctx.principal.actor, ctx.requestId);
      res.status(201).setHeader('Cache-Control', 'no-store');
      return { ...row, token };
    },
  });
  table.add({
    method: 'delete', path: `${base}/:id`, access: 'admin', tag: 'tokens', summary: 'Revoke an API token',
    handler: async (req, _res, ctx) => store.revoke(parse(TOKEN_ID, req.params.id, 'id'), ctx.principal.actor, ctx.requestId),
  });
}
