import { Approvals, destinationOf } from '../destinations';
import { DestinationsStore } from '../features/destinations/destinations-store';
import { isReservedKey } from '../key-rules';
import type { Pool } from '../db/pool';
import { withTransaction } from '../db/pool';
import type { HealthReason, HealthStatus } from './probes';

/** A provider as the prober needs it: what to probe and the state hysteresis starts from. */
export interface ProviderHealthRow {
  slug: string;
  kind: string;
  api_base: string | null;
  key_name: string;
  enabled: boolean;
  degraded_ms: number;
  health_status: HealthStatus;
  health_reason: string;
  health_ok_streak: number;
  health_fail_streak: number;
  health_key_fingerprint: string | null;
  /** An admin approved sending this provider's key to its api_base (see src/destinations.ts); reserved keys never are. */
  approved: boolean;
}

export interface LitellmHealthRow {
  url: string;
  status: HealthStatus;
  reason: string;
  observed_status: HealthStatus;
  observed_reason: string;
  latency_ms: number | null;
  http_status: number | null;
  detail: string | null;
  litellm_version: string | null;
  checked_at: Date;
  changed_at: Date;
  ok_streak: number;
  fail_streak: number;
}

/** One provider's new state after a round; `probed` is false for `no_key`/`disabled`/`unsupported` (no history row). */
export interface ProviderHealthUpdate {
  slug: string;
  status: HealthStatus;
  reason: HealthReason;
  observed_status: HealthStatus;
  observed_reason: HealthReason;
  latency_ms: number | null;
  http_status: number | null;
  detail: string;
  checked_at: Date;
  changed: boolean;
  ok_streak: number;
  fail_streak: number;
  key_name: string;
  key_version: number | null;
  key_fingerprint: string | null;
  probed: boolean;
}

/** A provider in the health list: its state, and the key it uses now (for the expiry flags). */
export interface ProviderHealthView {
  slug: string;
  kind: string;
  enabled: boolean;
  degraded_ms: number;
  health_status: HealthStatus;
  health_reason: string;
  health_observed_status: HealthStatus | null;
  health_observed_reason: string | null;
  health_latency_ms: number | null;
  health_http_status: number | null;
  health_detail: string | null;
  health_checked_at: Date | null;
  health_changed_at: Date | null;
  health_key_fingerprint: string | null;
  health_key_version: number | null;
  key_name: string;
  key_current_version: number | null;
  key_expires_at: Date | null;
}

export interface HistoryRow {
  id: number;
  status: HealthStatus;
  observed_status: HealthStatus;
  reason: string;
  latency_ms: number | null;
  http_status: number | null;
  detail: string | null;
  key_name: string | null;
  key_version: number | null;
  key_fingerprint: string | null;
  checked_at: Date;
}

export class HealthStore {
  constructor(private readonly pool: Pool) {}

  async providers(): Promise<ProviderHealthRow[]> {
    const { rows } = await this.pool.query<Omit<ProviderHealthRow, 'approved'>>(
      // A pool's provider is probed with its first key in service: a revoked first key must not make a
      // provider whose other keys serve look down.
      `SELECT p.slug, p.kind, p.api_base, enabled, degraded_ms, health_status, health_reason, health_ok_streak, health_fail_streak, health_key_fingerprint,
              coalesce((SELECT pk.key_name FROM provider_keys pk JOIN platform_keys k ON k.name = pk.key_name
                        WHERE pk.provider = p.slug AND k.state <> 'disabled' ORDER BY pk.position LIMIT 1), p.key_name) AS key_name
       FROM providers p ORDER BY p.slug`,
    );
    return this.withApproval(rows);
  }

  /** Marks each provider row with whether its key may be sent to its api_base. */
  private async withApproval<T extends { kind: string; api_base: string | null; key_name: string }>(rows: T[]): Promise<Array<T & { approved: boolean }>> {
    const approvals = new Approvals(await new DestinationsStore(this.pool).all());
    return rows.map((r) => ({ ...r, approved: !isReservedKey(r.key_name) && approvals.has(r.key_name, destinationOf(r.kind, r.api_base)) }));
  }

  async litellm(url: string): Promise<LitellmHealthRow | undefined> {
    const { rows } = await this.pool.query<LitellmHealthRow>('SELECT * FROM litellm_health WHERE url = $1', [url]);
    return rows[0];
  }

  /** Writes a round in one transaction: provider states, history rows, LiteLLM's state, and trims history older than `cutoff`. */
  async saveRound(updates: ProviderHealthUpdate[], litellm: LitellmHealthRow | undefined, cutoff: Date): Promise<void> {
    await withTransaction(this.pool, async (c) => {
      if (updates.length) {
        // A provider deleted during the round simply matches no row.
        await c.query(
          `UPDATE providers p SET
             health_status = u.status, health_reason = u.reason, health_observed_status = u.observed_status,
             health_observed_reason = u.observed_reason, health_latency_ms = u.latency_ms, health_http_status = u.http_status,
             health_detail = u.detail, health_checked_at = u.checked_at,
             health_changed_at = CASE WHEN u.changed THEN u.checked_at ELSE p.health_changed_at END,
             health_ok_streak = u.ok_streak, health_fail_streak = u.fail_streak,
             health_key_fingerprint = u.key_fingerprint, health_key_version = u.key_version
           FROM jsonb_to_recordset($1::jsonb) AS u(slug text, status text, reason text, observed_status text, observed_reason text,
             latency_ms int, http_status int, detail text, checked_at timestamptz, changed boolean, ok_streak int, fail_streak int,
             key_fingerprint text, key_version int)
           WHERE p.slug = u.slug`,
          [JSON.stringify(updates)],
        );
        const probed = updates.filter((u) => u.probed);
        if (probed.length) {
          await c.query(
            `INSERT INTO health_history (subject, name, status, observed_status, reason, latency_ms, http_status, detail, key_name, key_version, key_fingerprint, checked_at)
             SELECT 'provider', u.slug, u.status, u.observed_status, u.observed_reason, u.latency_ms, u.http_status, u.detail, u.key_name, u.key_version, u.key_fingerprint, u.checked_at
             FROM jsonb_to_recordset($1::jsonb) AS u(slug text, status text, observed_status text, observed_reason text, latency_ms int,
               http_status int, detail text, key_name text, key_version int, key_fingerprint text, checked_at timestamptz)`,
            [JSON.stringify(probed)],
          );
        }
      }
      if (litellm) {
        const l = litellm;
        await c.query(
          `INSERT INTO litellm_health (url, status, reason, observed_status, observed_reason, latency_ms, http_status, detail, litellm_version, checked_at, changed_at, ok_streak, fail_streak)
           VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13)
           ON CONFLICT (url) DO UPDATE SET status = EXCLUDED.status, reason = EXCLUDED.reason, observed_status = EXCLUDED.observed_status,
             observed_reason = EXCLUDED.observed_reason, latency_ms = EXCLUDED.latency_ms, http_status = EXCLUDED.http_status,
             detail = EXCLUDED.detail, litellm_version = COALESCE(EXCLUDED.litellm_version, litellm_health.litellm_version),
             checked_at = EXCLUDED.checked_at, changed_at = EXCLUDED.changed_at, ok_streak = EXCLUDED.ok_streak, fail_streak = EXCLUDED.fail_streak`,
          [l.url, l.status, l.reason, l.observed_status, l.observed_reason, l.latency_ms, l.http_status, l.detail, l.litellm_version, l.checked_at, l.changed_at, l.ok_streak, l.fail_streak],
        );
        await c.query(
          `INSERT INTO health_history (subject, name, status, observed_status, reason, latency_ms, http_status, detail, checked_at)
           VALUES ('litellm', $1, $2, $3, $4, $5, $6, $7, $8)`,
          [l.url, l.status, l.observed_status, l.observed_reason, l.latency_ms, l.http_status, l.detail, l.checked_at],
        );
      }
      await c.query('DELETE FROM health_history WHERE checked_at < $1', [cutoff]);
    });
  }

  /** Providers by slug, after `page.after` (a slug). */
  async list(page: { limit: number; after?: string }): Promise<ProviderHealthView[]> {
    const { rows } = await this.pool.query<ProviderHealthView>(
      `SELECT p.slug, p.kind, p.enabled, p.degraded_ms, p.health_status, p.health_reason, p.health_observed_status, p.health_observed_reason,
              p.health_latency_ms, p.health_http_status, p.health_detail, p.health_checked_at, p.health_changed_at,
              p.health_key_fingerprint, p.health_key_version, p.key_name,
              k.current_version AS key_current_version, k.expires_at AS key_expires_at
       FROM providers p LEFT JOIN platform_keys k ON k.name = p.key_name
       WHERE $1::text IS NULL OR p.slug > $1
       ORDER BY p.slug LIMIT $2`,
      [page.after ?? null, page.limit],
    );
    return rows;
  }

  /** Enabled providers that use the platform key `keyName`, for validating a new value of it. */
  async providersUsingKey(keyName: string): Promise<Array<{ slug: string; kind: string; api_base: string | null; key_name: string; degraded_ms: number; approved: boolean }>> {
    const { rows } = await this.pool.query<{ slug: string; kind: string; api_base: string | null; key_name: string; degraded_ms: number }>(
      'SELECT slug, kind, api_base, key_name, degraded_ms FROM providers WHERE key_name = $1 AND enabled ORDER BY slug',
      [keyName],
    );
    return this.withApproval(rows);
  }

  /** Platform keys whose expiry is before `before` (expired ones included), soonest first. */
  async keysExpiringBefore(before: Date): Promise<Array<{ name: string; version: number; expires_at: Date }>> {
    const { rows } = await this.pool.query<{ name: string; version: number; expires_at: Date }>(
      'SELECT name, current_version AS version, expires_at FROM platform_keys WHERE expires_at < $1 ORDER BY expires_at, name',
      [before],
    );
    return rows;
  }

  async providerExists(slug: string): Promise<boolean> {
    const { rowCount } = await this.pool.query('SELECT 1 FROM providers WHERE slug = $1', [slug]);
    return (rowCount ?? 0) > 0;
  }

  /** One provider's history, newest first; `beforeId` pages on. */
  async history(slug: string, limit: number, beforeId?: number): Promise<HistoryRow[]> {
    const { rows } = await this.pool.query<HistoryRow>(
      `SELECT id, status, observed_status, reason, latency_ms, http_status, detail, key_name, key_version, key_fingerprint, checked_at
       FROM health_history WHERE subject = 'provider' AND name = $1 ${beforeId ? 'AND id < $3' : ''}
       ORDER BY id DESC LIMIT $2`,
      beforeId ? [slug, limit, beforeId] : [slug, limit],
    );
    return rows;
  }
}
