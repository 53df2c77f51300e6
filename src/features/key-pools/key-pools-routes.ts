import { z } from 'zod';
import type { RouteTable } from '../../http/route-table';
import { name, parse } from '../../http/validate';
import type { PlatformKeysService } from '../platform-keys/platform-keys-service';
import type { KeyStatesService } from './key-states';

const base = '/api/v1/admin/platform-keys';

// Printable text without control characters: it goes into the audit log, alerts and the key's view.
const disableBody = z.strictObject({
  reason: z
    .string({ error: 'must be a string' })
    .min(1, { error: 'must not be empty' })
    .max(500, { error: 'must be at most 500 characters' })
    .regex(/^[^\p{Cc}]*$/u, { error: 'must not contain control characters' })
    .optional(),
});

export function registerKeyPoolRoutes(table: RouteTable, deps: { states: KeyStatesService; platformKeys: PlatformKeysService }): void {
  const keyName = (p: Record<string, unknown>): string => parse(name(), p.name, 'name');
  table.add({
    method: 'post', path: `${base}/:name/disable`, access: 'operator', tag: 'platform-keys', body: disableBody,
    summary: 'Take a key out of service (left out of both files at once) until it is enabled again; audited',
    responses: { 404: 'Not found', 409: "LiteLLM's own key" },
    handler: async (req, _res, ctx) => {
      const n = keyName(req.params);
      await deps.states.disable(n, parse(disableBody, req.body ?? {}).reason, ctx);
      return deps.platformKeys.get(n);
    },
  });
  table.add({
    method: 'post', path: `${base}/:name/enable`, access: 'operator', tag: 'platform-keys',
    summary: 'Put a key back in service, whatever took it out; audited', responses: { 404: 'Not found' },
    handler: async (req, _res, ctx) => {
      const n = keyName(req.params);
      await deps.states.enable(n, ctx);
      return deps.platformKeys.get(n);
    },
  });
}
