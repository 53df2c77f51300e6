import type { RouteTable } from '../../http/route-table';
import type { LiveEvents } from './live-events';

/** What the dashboard needs beyond the resources' own routes: who the caller is, and when to read again. */
export function registerDashboardRoutes(table: RouteTable, deps: { live?: LiveEvents }): void {
  table.add({
    method: 'get', path: '/api/v1/admin/whoami', access: 'viewer', tag: 'dashboard',
    summary: "The caller as keyplane sees it: the actor written into the audit trail, the role, and how it signed in (token, JWT, bootstrap)",
    handler: (_req, res, ctx) => {
      res.setHeader('Cache-Control', 'no-store');
      const { actor, role, via } = ctx.principal;
      return { actor, role, via };
    },
  });
  const live = deps.live;
  if (!live) return;
  table.add({
    method: 'get', path: '/api/v1/admin/events', access: 'viewer', tag: 'dashboard',
    summary:
      'Server-sent events (text/event-stream): `hello` {leader}, then `change` {topics: sync|reload|health|keys|config} after each render, reload, ' +
      'health round and key change; names only, never a value. Read it with fetch and the Authorization header; the stream ends after 10 min',
    responses: { 503: 'The server is stopping, or too many streams are open (poll instead)' },
    handler: (req, res) => live.attach(req, res),
  });
}
