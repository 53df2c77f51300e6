import { z } from 'zod';
import type { Pool } from '../../db/pool';
import { withTransaction } from '../../db/pool';
import { type Fingerprinter, type Keyring, last4, maskKey } from '../../crypto/keyring';
import { byokRef } from '../../crypto/secret-tables';
import { NotFound } from '../../http/errors';
import type { RouteTable } from '../../http/route-table';
import { apiKey, name, parse } from '../../http/validate';
import { appendAudit } from '../audit/audit-store';
import { cursorParam, limitParam, pageOf, toPage } from '../../http/paging';

export const byokBody = z.strictObject({ provider: name(), api_key: apiKey() });
const listQuery = z.strictObject({ limit: limitParam(), cursor: cursorParam(name()).optional() });

interface Row {
  provider: string;
  fingerprint: string;
  last4: string;
  created_at: Date;
  updated_at: Date;
}

const view = (r: Row) => ({
  provider: r.provider,
  masked_key: maskKey(r.last4),
  fingerprint: r.fingerprint,
  created_at: r.created_at.toISOString(),
  updated_at: r.updated_at.toISOString(),
});

/** Bring-your-own-key: each user's own provider keys, encrypted like platform keys, visible only to that user. */
export function registerByokRoutes(table: RouteTable, deps: { pool: Pool; keyring: Keyring; fingerprints: Fingerprinter }): void {
  const { pool, keyring, fingerprints } = deps;
  const base = '/api/v1/llm/byok/keys';
  table.add({
    method: 'get', path: base, access: 'any', tag: 'byok', summary: "The caller's own keys (masked), by provider; paged (?limit=1..1000, ?cursor=)",
    query: listQuery,
    handler: async (_req, _res, ctx, q) => {
      const { rows } = await pool.query<Row>(
        'SELECT provider, fingerprint, last4, created_at, updated_at FROM byok_keys WHERE user_sub = $1 AND ($2::text IS NULL OR provider > $2) ORDER BY provider LIMIT $3',
        [ctx.principal.user, q.cursor ?? null, q.limit + 1],
      );
      const page = pageOf(rows, q.limit, (r) => r.provider);
      return toPage({ items: page.items.map(view), next: page.next });
    },
  });
  table.add({
    method: 'post', path: base, access: 'any', tag: 'byok', body: byokBody, summary: 'Store (or replace) the caller\'s key for a provider', responses: { 201: 'Stored' },
    handler: async (req, res, ctx) => {
      const body = parse(byokBody, req.body);
      const user = ctx.principal.user;
      const { jwe, kid } = await keyring.encrypt(body.api_key, byokRef(user, body.provider));
      const fp = fingerprints.of(body.api_key);
      const row = await withTransaction(pool, async (c) => {
        const { rows } = await c.query<Row>(
          `INSERT INTO byok_keys (user_sub, provider, jwe, kid, fingerprint, last4) VALUES ($1,$2,$3,$4,$5,$6)
           ON CONFLICT (user_sub, provider) DO UPDATE SET jwe = EXCLUDED.jwe, kid = EXCLUDED.kid, fingerprint = EXCLUDED.fingerprint,
             last4 = EXCLUDED.last4, updated_at = now()
           RETURNING provider, fingerprint, last4, created_at, updated_at`,
          [user, body.provider, jwe, kid, fp, last4(body.api_key)],
        );
        await appendAudit(c, { actor: ctx.principal.actor, action: 'byok.put', target: `byok/${user}/${body.provider}`, requestId: ctx.requestId, details: { fingerprint: fp } });
        return rows[0]!;
      });
      res.status(201);
      return view(row);
    },
  });
  table.add({
    method: 'delete', path: `${base}/:provider`, access: 'any', tag: 'byok', summary: "Delete the caller's key for a provider", responses: { 204: 'Deleted', 404: 'Not found' },
    handler: async (req, res, ctx) => {
      const provider = parse(name(), req.params.provider, 'provider');
      await withTransaction(pool, async (c) => {
        const r = await c.query('DELETE FROM byok_keys WHERE user_sub = $1 AND provider = $2', [ctx.principal.user, provider]);
        if (!r.rowCount) throw new NotFound(`your key for ${provider}`);
        await appendAudit(c, { actor: ctx.principal.actor, action: 'byok.delete', target: `byok/${ctx.principal.user}/${provider}`, requestId: ctx.requestId });
      });
      res.status(204).end();
    },
  });
}
