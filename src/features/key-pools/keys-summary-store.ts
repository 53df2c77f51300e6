import type { Pool } from '../../db/pool';
import type { KeyState } from '../../sync/desired-state';

/** How many entries each list of the summary shows at most (each says how many there are in all). */
export const SUMMARY_LIST_MAX = 100;
/** How many of the oldest keys the summary shows. */
export const SUMMARY_OLDEST = 10;
/** Keys whose expiry falls within this many days are listed (the keyplane_keys gauge's "expiring"). */
export const EXPIRY_WINDOW_DAYS = 14;

const STATES: readonly KeyState[] = ['active', 'cooling', 'disabled', 'retiring'];

export interface KeysSummary {
  generated_at: string;
  total: number;
  by_state: Record<KeyState, number>;
  /** The keys whose current value is oldest: the first to rotate after a leak. */
  oldest: Array<{ name: string; version: number; version_created_at: string; age_days: number; state: KeyState; providers: string[] }>;
  /** Keys that expire within 14 days, or have expired, soonest first. */
  expiring: { count: number; items: Array<{ name: string; expires_at: string; expired: boolean; state: KeyState; providers: string[] }> };
  /** Disabled keys (left out of both files), newest first, with why and what the last probe saw. */
  out_of_service: {
    count: number;
    items: Array<{
      name: string;
      reason: string | null;
      note: string | null;
      since: string;
      replaced_by: string | null;
      providers: string[];
      last_probe: { outcome: string; http_status: number | null; checked_at: string } | null;
    }>;
  };
  /** Keys whose provider reports credit, least remaining (as a share of the limit) first. */
  credit: {
    count: number;
    items: Array<{ name: string; limit: number | null; usage: number | null; remaining: number | null; remaining_fraction: number | null; low: boolean; checked_at: string | null; providers: string[] }>;
  };
  /** Rotations still under way. */
  rotations: Array<{ rotation_id: number; provider: string; new_key: string; replaces: string; status: string; retire_at: string | null }>;
}

const num = (v: string | number | null): number | null => (v === null ? null : Number(v));
const iso = (d: Date | null): string | null => (d ? d.toISOString() : null);

// Per key, the providers whose pools hold it.
const PROVIDERS = `coalesce((SELECT array_agg(pk.provider ORDER BY pk.provider) FROM provider_keys pk WHERE pk.key_name = k.name), '{}') AS providers`;

/**
 * `GET /api/v1/admin/keys/summary`: the day a provider leaks or a package that held keys is
 * compromised, what to rotate first and what is already out. Read-only; credit is what the prober
 * stored in key_health.
 */
export class KeysSummaryStore {
  constructor(private readonly pool: Pool) {}

  async summary(): Promise<KeysSummary> {
    const client = await this.pool.connect();
    try {
      // One snapshot: the counts and the lists agree with each other.
      await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
      const q = <R extends Record<string, unknown>>(text: string, values: unknown[] = []): Promise<R[]> => client.query<R>(text, values).then((r) => r.rows);
      const [now] = await q<{ now: Date }>('SELECT now()');
      const states = await q<{ state: KeyState; n: number }>('SELECT state, count(*)::int AS n FROM platform_keys GROUP BY state');
      const oldest = await q<{ name: string; version: number; created_at: Date; age_days: number; state: KeyState; providers: string[] }>(
        `SELECT k.name, k.current_version AS version, v.created_at, floor(extract(epoch FROM now() - v.created_at) / 86400)::int AS age_days, k.state, ${PROVIDERS}
         FROM platform_keys k JOIN platform_key_versions v ON v.name = k.name AND v.version = k.current_version
         ORDER BY v.created_at, k.name LIMIT $1`,
        [SUMMARY_OLDEST],
      );
      const expiring = await q<{ name: string; expires_at: Date; expired: boolean; state: KeyState; providers: string[]; total: number }>(
        `SELECT k.name, k.expires_at, k.expires_at <= now() AS expired, k.state, ${PROVIDERS}, count(*) OVER ()::int AS total
         FROM platform_keys k WHERE k.expires_at <= now() + make_interval(days => $1)
         ORDER BY k.expires_at, k.name LIMIT $2`,
        [EXPIRY_WINDOW_DAYS, SUMMARY_LIST_MAX],
      );
      const out = await q<{
        name: string; state_reason: string | null; state_note: string | null; state_since: Date; replaced_by: string | null; providers: string[];
        outcome: string | null; http_status: number | null; checked_at: Date | null; total: number;
      }>(
        `SELECT k.name, k.state_reason, k.state_note, k.state_since, k.replaced_by, ${PROVIDERS}, h.outcome, h.http_status, h.checked_at, count(*) OVER ()::int AS total
         FROM platform_keys k LEFT JOIN key_health h ON h.name = k.name
         WHERE k.state = 'disabled' ORDER BY k.state_since DESC, k.name LIMIT $1`,
        [SUMMARY_LIST_MAX],
      );
      const credit = await q<{
        name: string; credit_limit: string | null; credit_usage: string | null; credit_remaining: string | null; fraction: string | null; credit_low: boolean;
        credit_checked_at: Date | null; providers: string[]; total: number;
      }>(
        `SELECT k.name, h.credit_limit, h.credit_usage, h.credit_remaining,
                CASE WHEN h.credit_limit > 0 THEN h.credit_remaining / h.credit_limit END AS fraction,
                h.credit_low, h.credit_checked_at, ${PROVIDERS}, count(*) OVER ()::int AS total
         FROM key_health h JOIN platform_keys k ON k.name = h.name
         WHERE h.credit_remaining IS NOT NULL OR h.credit_limit IS NOT NULL OR h.credit_usage IS NOT NULL
         ORDER BY fraction NULLS LAST, h.credit_remaining NULLS LAST, k.name LIMIT $1`,
        [SUMMARY_LIST_MAX],
      );
      const rotations = await q<{ id: number; provider: string; new_key: string; replaces: string; status: string; retire_at: Date | null }>(
        `SELECT id, provider, new_key, replaces, status, retire_at FROM key_rotations WHERE status IN ('waiting_for_reload', 'retiring') ORDER BY id LIMIT $1`,
        [SUMMARY_LIST_MAX],
      );
      await client.query('COMMIT');
      const byState = Object.fromEntries(STATES.map((s) => [s, states.find((r) => r.state === s)?.n ?? 0])) as Record<KeyState, number>;
      return {
        generated_at: now!.now.toISOString(),
        total: states.reduce((n, r) => n + r.n, 0),
        by_state: byState,
        oldest: oldest.map((r) => ({ name: r.name, version: r.version, version_created_at: r.created_at.toISOString(), age_days: r.age_days, state: r.state, providers: r.providers })),
        expiring: {
          count: expiring[0]?.total ?? 0,
          items: expiring.map((r) => ({ name: r.name, expires_at: r.expires_at.toISOString(), expired: r.expired, state: r.state, providers: r.providers })),
        },
        out_of_service: {
          count: out[0]?.total ?? 0,
          items: out.map((r) => ({
            name: r.name,
            reason: r.state_reason,
            note: r.state_note,
            since: r.state_since.toISOString(),
            replaced_by: r.replaced_by,
            providers: r.providers,
            last_probe: r.outcome === null ? null : { outcome: r.outcome, http_status: r.http_status, checked_at: iso(r.checked_at)! },
          })),
        },
        credit: {
          count: credit[0]?.total ?? 0,
          items: credit.map((r) => ({
            name: r.name,
            limit: num(r.credit_limit),
            usage: num(r.credit_usage),
            remaining: num(r.credit_remaining),
            remaining_fraction: num(r.fraction),
            low: r.credit_low,
            checked_at: iso(r.credit_checked_at),
            providers: r.providers,
          })),
        },
        rotations: rotations.map((r) => ({ rotation_id: r.id, provider: r.provider, new_key: r.new_key, replaces: r.replaces, status: r.status, retire_at: iso(r.retire_at) })),
      };
    } catch (err) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw err;
    } finally {
      client.release();
    }
  }
}
