import { z } from 'zod';
import type { RouteTable } from '../../http/route-table';
import { queryInt, queryString } from '../../http/validate';
import { cursorParam, encodeCursor, limitParam } from '../../http/paging';
import { ValidationFailed } from '../../http/errors';
import type { AuditStore } from './audit-store';

const AUDIT_ID = z.number().int().positive();

const query = z.strictObject({
  limit: limitParam(),
  cursor: cursorParam(AUDIT_ID).optional(),
  // The older way to page, kept: ?before=<id> with next_before.
  before: queryInt(1, Number.MAX_SAFE_INTEGER, 'must be an audit id').optional(),
  target: queryString(z.string().max(300, { error: 'must be at most 300 characters' })).optional(),
  action: queryString(z.string().max(100, { error: 'must be at most 100 characters' })).optional(),
});

export function registerAuditRoutes(table: RouteTable, store: AuditStore): void {
  table.add({
    method: 'get', path: '/api/v1/admin/audit', access: 'admin', tag: 'audit',
    summary: 'Audit trail, newest first (?target, ?action); paged (?limit=1..1000, ?cursor=, or ?before=<id> with next_before)',
    query,
    handler: async (_req, _res, _ctx, q) => {
      if (q.cursor !== undefined && q.before !== undefined) throw new ValidationFailed([{ field: 'query.before', rule: 'must not be given with cursor' }]);
      const rows = await store.list({ limit: q.limit + 1, beforeId: q.cursor ?? q.before, target: q.target, action: q.action });
      const items = rows.slice(0, q.limit);
      const last = rows.length > q.limit ? items[items.length - 1]!.id : null;
      return { items, next_cursor: last === null ? null : encodeCursor(Number(last)), next_before: last };
    },
  });
  table.add({
    method: 'get', path: '/api/v1/admin/audit/verify', access: 'admin', tag: 'audit', summary: 'Check that the audit hash chain is intact',
    handler: async () => store.verify(),
  });
}
