import { z } from 'zod';
import type { RouteTable } from '../../http/route-table';
import { parse } from '../../http/validate';
import type { AuditStore } from './audit-store';

const query = z.object({
  limit: z.coerce.number({ error: 'must be a whole number' }).int({ error: 'must be a whole number' }).min(1, { error: 'must be 1 to 1000' }).max(1000, { error: 'must be 1 to 1000' }).default(100),
  before: z.coerce.number({ error: 'must be an audit id' }).int({ error: 'must be an audit id' }).positive({ error: 'must be an audit id' }).optional(),
  target: z.string().max(300).optional(),
  action: z.string().max(100).optional(),
});

export function registerAuditRoutes(table: RouteTable, store: AuditStore): void {
  table.add({
    method: 'get', path: '/api/v1/admin/audit', access: 'admin', tag: 'audit', summary: 'Audit trail, newest first (?limit, ?before=<id>, ?target, ?action)',
    handler: async (req) => {
      const q = parse(query, req.query);
      const items = await store.list({ limit: q.limit, beforeId: q.before, target: q.target, action: q.action });
      return { items, next_before: items.length === q.limit ? items[items.length - 1]!.id : null };
    },
  });
  table.add({
    method: 'get', path: '/api/v1/admin/audit/verify', access: 'admin', tag: 'audit', summary: 'Check that the audit hash chain is intact',
    handler: async () => store.verify(),
  });
}
