import type { RouteTable } from '../../http/route-table';
import type { KeysSummaryStore } from './keys-summary-store';

export function registerKeysSummaryRoutes(table: RouteTable, store: KeysSummaryStore): void {
  table.add({
    method: 'get', path: '/api/v1/admin/keys/summary', access: 'viewer', tag: 'platform-keys',
    summary: 'Incident view: keys by state, the oldest values, keys expiring within 14 days, keys out of service (with why), credit remaining, rotations under way',
    handler: async (_req, res) => {
      res.setHeader('Cache-Control', 'no-store');
      return store.summary();
    },
  });
}
