import client from 'prom-client';
import type { Alerter } from '../../alerts/alerter';
import type { Pool, PoolClient } from '../../db/pool';
import { withTransaction } from '../../db/pool';
import { Conflict, NotFound, ValidationFailed } from '../../http/errors';
import type { RequestContext } from '../../http/principal';
import { isReservedKey } from '../../key-rules';
import type { Logger } from '../../log';
import type { KeyState } from '../../sync/desired-state';
import { appendAudit } from '../audit/audit-store';

/**
 * The state of a platform key, and every change of it. A key is `active`; `cooling` while a
 * provider rate-limits it (until `until`, still rendered); `disabled` for a reason (`auth_failed`,
 * `quota_exhausted`, `manual`, `replaced`: left out of both files); `retiring` once a rotation has
 * replaced it (rendered until `until`). A change is one transaction with its audit row; the
 * platform_keys trigger makes it a render. Alerts go out after the commit, never with a secret.
 */

export type StateReason = 'rate_limited' | 'auth_failed' | 'quota_exhausted' | 'manual' | 'replaced' | 'rotated';

export interface StateChange {
  state: KeyState;
  reason: StateReason | null;
  /** The operator's words, for a manual disable. */
  note?: string | null;
  /** `cooling`: until when; `retiring`: when it leaves the files. */
  until?: Date | null;
  /** `retiring`: the key that replaces it. */
  replacedBy?: string | null;
}

/** Who made the change: a request, or keyplane itself (the prober, a rotation's deadline). */
export interface Actor {
  actor: string;
  requestId?: string;
}

export interface Transition {
  key: string;
  from: { state: KeyState; reason: string | null };
  to: StateChange;
  /** Providers whose pools hold the key, and whether each has a key in service before and after. */
  pools: Array<{ provider: string; inServiceBefore: number; inServiceAfter: number; models: string[] }>;
}

const NOTE_MAX = 500;

export class KeyStatesService {
  private readonly transitions: client.Counter<'to' | 'reason'> | undefined;

  constructor(
    private readonly pool: Pool,
    private readonly alerter: Alerter,
    private readonly log: Logger,
    registry?: client.Registry,
  ) {
    this.transitions = registry
      ? new client.Counter({
          name: 'keyplane_key_state_transitions_total',
          help: 'Platform key state changes by new state and reason',
          labelNames: ['to', 'reason'],
          registers: [registry],
        })
      : undefined;
  }

  /**
   * Moves `name` to `change` inside the caller's transaction, with an audit row. Undefined when the
   * key is already in that state for that reason (nothing written). The caller hands the result to
   * `announce` after its commit.
   */
  async transition(c: PoolClient, name: string, change: StateChange, by: Actor): Promise<Transition | undefined> {
    // One transition at a time per pool: two keys of one pool going out at once must each see the
    // other, or neither would say that the provider has no key left. Providers first, in slug order.
    await c.query('SELECT 1 FROM providers WHERE slug IN (SELECT provider FROM provider_keys WHERE key_name = $1) ORDER BY slug FOR UPDATE', [name]);
    const cur = (
      await c.query<{ state: KeyState; state_reason: string | null; state_until: Date | null }>('SELECT state, state_reason, state_until FROM platform_keys WHERE name = $1 FOR UPDATE', [name])
    ).rows[0];
    if (!cur) throw new NotFound(`platform key ${name}`);
    const until = change.until ?? null;
    if (cur.state === change.state && cur.state_reason === change.reason && (cur.state_until?.getTime() ?? null) === (until?.getTime() ?? null)) return undefined;
    const before = await this.poolsOf(c, name);
    await c.query(
      `UPDATE platform_keys SET state = $2, state_reason = $3, state_note = $4, state_since = now(), state_until = $5, replaced_by = $6 WHERE name = $1`,
      [name, change.state, change.reason, change.note ?? null, until, change.replacedBy ?? null],
    );
    const after = await this.poolsOf(c, name);
    await appendAudit(c, {
      actor: by.actor,
      action: 'platform_key.state',
      target: `platform_key/${name}`,
      requestId: by.requestId,
      details: {
        from: cur.state,
        from_reason: cur.state_reason,
        to: change.state,
        reason: change.reason,
        ...(change.note ? { note: change.note } : {}),
        ...(until ? { until: until.toISOString() } : {}),
        ...(change.replacedBy ? { replaced_by: change.replacedBy } : {}),
      },
    });
    return {
      key: name,
      from: { state: cur.state, reason: cur.state_reason },
      to: { ...change, until },
      pools: before.map((b) => ({ ...b, inServiceBefore: b.inService, inServiceAfter: after.find((a) => a.provider === b.provider)?.inService ?? 0 })).map(({ inService: _, ...rest }) => rest),
    };
  }

  /** Alerts and counts a committed transition; never throws. */
  async announce(t: Transition | undefined): Promise<void> {
    if (!t) return;
    this.transitions?.inc({ to: t.to.state, reason: t.to.reason ?? 'none' });
    const fields = { key_name: t.key, from: t.from.state, from_reason: t.from.reason, to: t.to.state, reason: t.to.reason, until: t.to.until?.toISOString() ?? null };
    this.log.warn(`platform key ${t.key} is now ${t.to.state}${t.to.reason ? ` (${t.to.reason})` : ''}`, fields);
    await this.send({ type: 'key.state_changed', ...fields, providers: t.pools.map((p) => p.provider) });
    for (const p of t.pools) {
      if (p.inServiceBefore > 0 && p.inServiceAfter === 0) {
        this.log.error(`provider ${p.provider} has no key in service: its models are left out of LiteLLM's config`, { provider: p.provider, models: p.models });
        await this.send({ type: 'provider.no_keys', provider: p.provider, models: p.models, key_name: t.key });
      } else if (p.inServiceBefore === 0 && p.inServiceAfter > 0) {
        await this.send({ type: 'provider.keys_restored', provider: p.provider, models: p.models, key_name: t.key });
      }
    }
  }

  /** `POST .../platform-keys/:name/disable`: out of service until enabled again (never on its own). */
  async disable(name: string, note: string | undefined, ctx: RequestContext): Promise<Transition | undefined> {
    if (isReservedKey(name)) throw new Conflict(`${name} is LiteLLM's own key, not a provider's: it cannot be taken out of service`);
    if (note !== undefined && note.length > NOTE_MAX) throw new ValidationFailed([{ field: 'reason', rule: `at most ${NOTE_MAX} characters` }]);
    const t = await withTransaction(this.pool, (c) => this.transition(c, name, { state: 'disabled', reason: 'manual', note: note ?? null }, { actor: ctx.principal.actor, requestId: ctx.requestId }));
    await this.announce(t);
    return t;
  }

  /** `POST .../platform-keys/:name/enable`: back in service, whatever took it out. */
  async enable(name: string, ctx: RequestContext): Promise<Transition | undefined> {
    const t = await withTransaction(this.pool, (c) => this.transition(c, name, { state: 'active', reason: null }, { actor: ctx.principal.actor, requestId: ctx.requestId }));
    await this.announce(t);
    return t;
  }

  private async poolsOf(c: PoolClient, name: string): Promise<Array<{ provider: string; inService: number; models: string[] }>> {
    const { rows } = await c.query<{ provider: string; in_service: number; models: string[] }>(
      `SELECT pk.provider,
              (SELECT count(*)::int FROM provider_keys o JOIN platform_keys k ON k.name = o.key_name
                WHERE o.provider = pk.provider AND k.state <> 'disabled') AS in_service,
              coalesce((SELECT array_agg(DISTINCT m.model_name ORDER BY m.model_name) FROM models m WHERE m.provider = pk.provider), '{}') AS models
       FROM provider_keys pk WHERE pk.key_name = $1 ORDER BY pk.provider`,
      [name],
    );
    return rows.map((r) => ({ provider: r.provider, inService: r.in_service, models: r.models }));
  }

  private async send(event: Parameters<Alerter['send']>[0]): Promise<void> {
    try {
      await this.alerter.send(event);
    } catch (err) {
      this.log.warn('could not send the alert', { type: event.type, err });
    }
  }
}
