import { createHash, randomBytes, randomUUID } from 'node:crypto';
import type { Pool } from '../../db/pool';
import { withTransaction } from '../../db/pool';
import type { Role } from '../../http/principal';
import { appendAudit } from '../audit/audit-store';
import { NotFound } from '../../http/errors';
import { pageOf, type PageRequest } from '../../http/paging';

/** The sort key a page of tokens continues after: created_at in microseconds since 1970 (exact: below 2^53), id. */
export type TokenCursor = [number, string];

export interface TokenRow {
  id: string;
  name: string;
  role: Role;
  created_by: string;
  created_at: Date;
  last_used_at: Date | null;
  revoked_at: Date | null;
}

export const TOKEN_PREFIX = 'kp_';
export const sha256 = (s: string): Buffer => createHash('sha256').update(s).digest();

/** API tokens: shown once at creation, stored only as SHA-256, looked up by that hash. */
export class TokensStore {
  constructor(private readonly pool: Pool) {}

  async create(name: string, role: Role, actor: string, requestId?: string): Promise<{ token: string; row: TokenRow }> {
    const token = TOKEN_PREFIX + randomBytes(32).toString('base64url');
    const id = randomUUID();
    const row = await withTransaction(this.pool, async (c) => {
      const { rows } = await c.query<TokenRow>(
        `INSERT INTO api_tokens (id, name, role, token_sha256, created_by) VALUES ($1,$2,$3,$4,$5)
         RETURNING id, name, role, created_by, created_at, last_used_at, revoked_at`,
        [id, name, role, sha256(token), actor],
      );
      await appendAudit(c, { actor, action: 'token.create', target: `token/${id}`, requestId, details: { name, role } });
      return rows[0]!;
    });
    return { token, row };
  }

  async findActive(token: string): Promise<TokenRow | undefined> {
    const hash = sha256(token);
    const { rows } = await this.pool.query<TokenRow>(
      'SELECT id, name, role, created_by, created_at, last_used_at, revoked_at FROM api_tokens WHERE token_sha256 = $1 AND revoked_at IS NULL',
      [hash],
    );
    const row = rows[0];
    // last_used_at is coarse (a minute) so that reads do not turn into a write per request.
    if (row && (!row.last_used_at || Date.now() - row.last_used_at.getTime() > 60_000)) {
      this.pool.query('UPDATE api_tokens SET last_used_at = now() WHERE id = $1', [row.id]).catch(() => undefined);
    }
    return row;
  }

  /** One page of tokens, oldest first (created_at in whole microseconds: a JS Date would drop them). */
  async list(page: PageRequest<TokenCursor>): Promise<{ items: TokenRow[]; next: TokenCursor | undefined }> {
    const { rows } = await this.pool.query<TokenRow & { created_us: number }>(
      `SELECT id, name, role, created_by, created_at, last_used_at, revoked_at, (extract(epoch FROM created_at) * 1000000)::bigint AS created_us
       FROM api_tokens
       WHERE $1::bigint IS NULL OR (created_at, id) > ('epoch'::timestamptz + $1::bigint * interval '1 microsecond', $2::uuid)
       ORDER BY created_at, id LIMIT $3`,
      [page.after?.[0] ?? null, page.after?.[1] ?? null, page.limit + 1],
    );
    const p = pageOf(rows, page.limit, (r): TokenCursor => [r.created_us, r.id]);
    return { items: p.items.map(({ created_us: _us, ...row }) => row), next: p.next };
  }

  async revoke(id: string, actor: string, requestId?: string): Promise<TokenRow> {
    return withTransaction(this.pool, async (c) => {
      const { rows } = await c.query<TokenRow>(
        `UPDATE api_tokens SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1
         RETURNING id, name, role, created_by, created_at, last_used_at, revoked_at`,
        [id],
      );
      if (!rows[0]) throw new NotFound(`token ${id}`);
      await appendAudit(c, { actor, action: 'token.revoke', target: `token/${id}`, requestId, details: { name: rows[0].name } });
      return rows[0];
    });
  }
}
