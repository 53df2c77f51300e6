import { z } from 'zod';
import { normalizeDestination } from '../../destinations';
import type { RouteTable } from '../../http/route-table';
import { name, parse } from '../../http/validate';
import type { DestinationsService } from './destinations-service';

const destination = z.string({ error: 'must be a string' }).transform((raw, ctx) => {
  const d = normalizeDestination(raw);
  if (d === undefined) {
    ctx.addIssue({ code: 'custom', message: 'must be an http(s) origin such as https://api.openai.com (no path, query or credentials), or litellm-default:<kind>' });
    return z.NEVER;
  }
  return d;
});

export const allowedHostsBody = z.strictObject({
  allowed_hosts: z.array(destination, { error: 'must be a list of origins' }).max(100, { error: 'must list at most 100 destinations' }),
});

export function registerDestinationRoutes(table: RouteTable, svc: DestinationsService): void {
  const path = '/api/v1/admin/platform-keys/:name/allowed-hosts';
  const keyName = (p: Record<string, unknown>): string => parse(name(), p.name, 'name');
  table.add({
    method: 'get', path, access: 'viewer', tag: 'platform-keys', summary: 'Where a platform key may be sent (approved destinations)',
    handler: async (req) => svc.get(keyName(req.params)),
  });
  table.add({
    method: 'put', path, access: 'admin', tag: 'platform-keys', body: allowedHostsBody,
    summary: 'Replace where a platform key may be sent: origins (https://host[:port]) or litellm-default:<kind>; deployments elsewhere are left out',
    handler: async (req, _res, ctx) => svc.replace(keyName(req.params), parse(allowedHostsBody, req.body).allowed_hosts, ctx),
  });
}
