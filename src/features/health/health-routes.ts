import { z } from 'zod';
import type { RouteTable } from '../../http/route-table';
import { NotFound, ServiceUnavailable, ValidationFailed } from '../../http/errors';
import { name, parse, queryInt } from '../../http/validate';
import { cursorParam, encodeCursor, limitParam, pageOf, toPage } from '../../http/paging';
import type { HealthStore, LitellmHealthRow, ProviderHealthView } from '../../health/health-store';
import { EXPIRING_WITHIN_MS, type Prober } from '../../health/prober';

export interface HealthRoutesDeps {
  store: HealthStore;
  prober: Pick<Prober, 'runNow'>;
  /** LiteLLM's URL as the prober stores it (`displayUrl(settings.litellmUrl)`). */
  litellmUrl: string;
  now?: () => Date;
}

const listQuery = z.strictObject({ limit: limitParam(), cursor: cursorParam(name()).optional() });
const historyQuery = z.strictObject({
  limit: limitParam(),
  cursor: cursorParam(z.number().int().positive()).optional(),
  // The older way to page, kept: ?before=<id> with next_before.
  before: queryInt(1, Number.MAX_SAFE_INTEGER, 'must be a history id').optional(),
});

const iso = (d: Date | null): string | null => (d ? d.toISOString() : null);

function expiry(expiresAt: Date | null, now: number): { expiring: boolean; expired: boolean } {
  const t = expiresAt?.getTime();
  return { expiring: t !== undefined && t - now < EXPIRING_WITHIN_MS, expired: t !== undefined && t <= now };
}

function providerItem(r: ProviderHealthView, now: number) {
  return {
    slug: r.slug,
    kind: r.kind,
    enabled: r.enabled,
    status: r.health_status,
    reason: r.health_reason,
    observed: r.health_observed_status ? { status: r.health_observed_status, reason: r.health_observed_reason } : null,
    latency_ms: r.health_latency_ms,
    http_status: r.health_http_status,
    detail: r.health_detail,
    checked_at: iso(r.health_checked_at),
    changed_at: iso(r.health_changed_at),
    degraded_ms: r.degraded_ms,
    key: {
      name: r.key_name,
      // The version and fingerprint that were probed; `current_version` shows whether a newer one awaits its first probe.
      version: r.health_key_version,
      fingerprint: r.health_key_fingerprint,
      current_version: r.key_current_version,
      expires_at: iso(r.key_expires_at),
      ...expiry(r.key_expires_at, now),
    },
  };
}

function litellmItem(r: LitellmHealthRow) {
  return {
    url: r.url,
    status: r.status,
    reason: r.reason,
    observed: { status: r.observed_status, reason: r.observed_reason },
    latency_ms: r.latency_ms,
    http_status: r.http_status,
    detail: r.detail,
    version: r.litellm_version,
    checked_at: r.checked_at.toISOString(),
    changed_at: r.changed_at.toISOString(),
  };
}

/** Register before the providers routes: `/providers/health` would otherwise match `/providers/:slug`. */
export function registerHealthRoutes(table: RouteTable, deps: HealthRoutesDeps): void {
  const now = deps.now ?? (() => new Date());
  table.add({
    method: 'get',
    path: '/api/v1/admin/providers/health',
    access: 'viewer',
    tag: 'health',
    summary: 'Health of every provider (by slug; paged: ?limit=1..1000, ?cursor=) and of LiteLLM, with the probed key and expiring keys',
    query: listQuery,
    handler: async (_req, _res, _ctx, q) => {
      const t = now().getTime();
      const [providers, litellm, expiring] = await Promise.all([
        deps.store.list({ limit: q.limit + 1, after: q.cursor }),
        deps.store.litellm(deps.litellmUrl),
        deps.store.keysExpiringBefore(new Date(t + EXPIRING_WITHIN_MS)),
      ]);
      const page = pageOf(providers, q.limit, (p) => p.slug);
      return {
        ...toPage({ items: page.items.map((p) => providerItem(p, t)), next: page.next }),
        litellm: litellm ? litellmItem(litellm) : null,
        expiring_keys: expiring.map((k) => ({
          name: k.name,
          version: k.version,
          expires_at: k.expires_at.toISOString(),
          days_left: Math.floor((k.expires_at.getTime() - t) / 86_400_000),
          expired: k.expires_at.getTime() <= t,
        })),
      };
    },
  });
  table.add({
    method: 'get',
    path: '/api/v1/admin/providers/:slug/health/history',
    access: 'viewer',
    tag: 'health',
    summary: 'Probe results of one provider, newest first; paged (?limit=1..1000, ?cursor=, or ?before=<id> with next_before)',
    responses: { 404: 'No such provider' },
    query: historyQuery,
    handler: async (req, _res, _ctx, q) => {
      const slug = parse(name(), req.params.slug, 'slug');
      if (q.cursor !== undefined && q.before !== undefined) throw new ValidationFailed([{ field: 'query.before', rule: 'must not be given with cursor' }]);
      if (!(await deps.store.providerExists(slug))) throw new NotFound(`provider ${slug}`);
      const all = await deps.store.history(slug, q.limit + 1, q.cursor ?? q.before);
      const rows = all.slice(0, q.limit);
      const last = all.length > q.limit ? rows[rows.length - 1]!.id : null;
      return {
        items: rows.map((r) => ({
          id: r.id,
          status: r.status,
          observed_status: r.observed_status,
          reason: r.reason,
          latency_ms: r.latency_ms,
          http_status: r.http_status,
          detail: r.detail,
          key: { name: r.key_name, version: r.key_version, fingerprint: r.key_fingerprint },
          checked_at: r.checked_at.toISOString(),
        })),
        next_cursor: last === null ? null : encodeCursor(last),
        next_before: last,
      };
    },
  });
  table.add({
    method: 'post',
    path: '/api/v1/admin/llm/health/check',
    access: 'operator',
    tag: 'health',
    summary: 'Run a health round now (or join the one running) and return its results',
    responses: { 503: 'The prober is stopped' },
    handler: async () => {
      try {
        return await deps.prober.runNow();
      } catch (err) {
        throw new ServiceUnavailable(`the health round did not complete: ${err instanceof Error ? err.message : String(err)}`);
      }
    },
  });
}
