import type { Pool, PoolClient } from '../../db/pool';
import { withTransaction } from '../../db/pool';
import type { Pair } from '../../destinations';
import { AppError, ValidationFailed } from '../../http/errors';
import { roleAtLeast, type RequestContext } from '../../http/principal';
import { isReservedKey } from '../../key-rules';
import { appendAudit } from '../audit/audit-store';
import { DestinationsStore, type DestinationRow } from './destinations-store';

/** An operator's write would send a key to a destination no admin approved. Names each field, key and destination. */
export class DestinationNotApproved extends AppError {
  constructor(pairs: Pair[]) {
    const errors = pairs.map((p) => ({ field: p.field, rule: `would send platform key ${p.keyName} to ${p.destination}, which an admin has not approved for it` }));
    super(
      403,
      'destination-not-approved',
      'Destination not approved',
      `${errors.map((e) => `${e.field}: ${e.rule}`).join('; ')}; an admin approves it with PUT /api/v1/admin/platform-keys/<key>/allowed-hosts, or makes this change`,
      { errors },
    );
  }
}

export interface AllowedHostsView {
  name: string;
  allowed_hosts: string[];
  items: Array<{ destination: string; approved_by: string; approved_at: string }>;
}

const view = (name: string, rows: DestinationRow[]): AllowedHostsView => ({
  name,
  allowed_hosts: rows.map((r) => r.destination),
  items: rows.map((r) => ({ destination: r.destination, approved_by: r.approved_by, approved_at: r.approved_at.toISOString() })),
});

/**
 * Where each platform key may be sent. An admin's write approves the pairs it makes; an operator's
 * write may only make pairs an admin already approved. Reserved keys are never sent anywhere.
 */
export class DestinationsService {
  readonly store: DestinationsStore;

  constructor(private readonly pool: Pool) {
    this.store = new DestinationsStore(pool);
  }

  /**
   * Inside the caller's transaction: approves `pairs` for an admin (returns the new ones, for the
   * audit row), or refuses an operator's write with 403 when any pair is not approved.
   */
  async enforce(client: PoolClient, pairs: Pair[], ctx: RequestContext): Promise<string[]> {
    const reserved = pairs.filter((p) => isReservedKey(p.keyName));
    if (reserved.length) {
      throw new ValidationFailed(reserved.map((p) => ({ field: p.field, rule: `${p.keyName} is LiteLLM's own key and is never sent to a provider` })));
    }
    if (roleAtLeast(ctx.principal.role, 'admin')) {
      const added = await this.store.approve(client, pairs, ctx.principal.actor);
      return added.map((a) => `${a.keyName} -> ${a.destination}`);
    }
    const missing = await this.store.unapproved(client, pairs);
    if (missing.length) throw new DestinationNotApproved(missing);
    return [];
  }

  async get(name: string): Promise<AllowedHostsView> {
    return view(name, await this.store.list(name));
  }

  /** Replaces the approved destinations of `name` (admin). A key need not exist yet. */
  async replace(name: string, destinations: string[], ctx: RequestContext): Promise<AllowedHostsView> {
    if (isReservedKey(name)) throw new ValidationFailed([{ field: 'name', rule: `${name} is LiteLLM's own key and is never sent to a provider` }]);
    const unique = [...new Set(destinations)].sort();
    return withTransaction(this.pool, async (c) => {
      const { added, removed } = await this.store.replace(c, name, unique, ctx.principal.actor);
      if (added.length || removed.length) {
        await appendAudit(c, { actor: ctx.principal.actor, action: 'platform_key.allowed_hosts', target: `platform_key/${name}`, requestId: ctx.requestId, details: { added, removed } });
      }
      return view(name, await this.store.list(name, c));
    });
  }
}
