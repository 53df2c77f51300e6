import { Approvals, destinationOf } from '../destinations';
import { DestinationsStore } from '../features/destinations/destinations-store';
import { isReservedKey } from '../key-rules';
import type { Pool } from '../db/pool';
import type { KeyState } from '../sync/desired-state';
import type { KeyOutcome } from './key-findings';

/** One (key, provider) pair of a pool, with what probing it needs and the key's state. */
export interface PoolPair {
  name: string;
  provider: string;
  /** The key's position in the provider's pool (0 first): the `slot` metrics are labelled with. */
  slot: number;
  kind: string;
  api_base: string | null;
  /** The provider is switched on. */
  enabled: boolean;
  /** An admin approved sending this key to the provider's api_base (see src/destinations.ts). */
  approved: boolean;
  state: KeyState;
  state_reason: string | null;
  state_until: Date | null;
  current_version: number;
}

/** `key_health`, as read. */
export interface KeyHealthRow {
  name: string;
  outcome: KeyOutcome;
  http_status: number | null;
  endpoint: string | null;
  detail: string | null;
  latency_ms: number | null;
  key_version: number | null;
  checked_at: Date;
  ok_streak: number;
  fail_streak: number;
  next_probe_at: Date | null;
  credit_limit: number | null;
  credit_usage: number | null;
  credit_remaining: number | null;
  credit_checked_at: Date | null;
  credit_low: boolean;
}

/** A row to write; `credit_checked_at` null keeps the credit the key had (the probe did not report any). */
export type KeyHealthUpdate = KeyHealthRow;

/** The `health` of a key in the API (the platform key's view, and each key of a provider's pool). */
export interface KeyHealthView {
  outcome: KeyOutcome;
  /** The request that proved it, such as `GET /api/v1/key`. */
  endpoint: string | null;
  http_status: number | null;
  detail: string | null;
  latency_ms: number | null;
  /** The version that was probed. */
  key_version: number | null;
  checked_at: string;
  ok_streak: number;
  fail_streak: number;
  /** An automatically disabled key: when it is probed again. */
  next_probe_at: string | null;
  credit: { limit: number | null; usage: number | null; remaining: number | null; fraction_remaining: number | null; low: boolean; checked_at: string } | null;
}

type Stamp = Date | string | null;
const iso = (d: Stamp): string | null => (d === null ? null : new Date(d).toISOString());
const numOrNull = (v: unknown): number | null => (v === null || v === undefined ? null : Number(v));

/** Builds the view from a row read as columns or as `row_to_json` (timestamps as text). */
export function toKeyHealthView(r: Omit<KeyHealthRow, 'checked_at' | 'next_probe_at' | 'credit_checked_at'> & { checked_at: Stamp; next_probe_at: Stamp; credit_checked_at: Stamp }): KeyHealthView {
  const limit = numOrNull(r.credit_limit);
  const remaining = numOrNull(r.credit_remaining);
  return {
    outcome: r.outcome,
    endpoint: r.endpoint,
    http_status: r.http_status,
    detail: r.detail,
    latency_ms: r.latency_ms,
    key_version: r.key_version,
    checked_at: iso(r.checked_at)!,
    ok_streak: r.ok_streak,
    fail_streak: r.fail_streak,
    next_probe_at: iso(r.next_probe_at),
    credit:
      r.credit_checked_at === null
        ? null
        : {
            limit,
            usage: numOrNull(r.credit_usage),
            remaining,
            fraction_remaining: limit !== null && limit > 0 && remaining !== null ? remaining / limit : null,
            low: r.credit_low,
            checked_at: iso(r.credit_checked_at)!,
          },
  };
}

const COLUMNS = `name, outcome, http_status, endpoint, detail, latency_ms, key_version, checked_at, ok_streak, fail_streak, next_probe_at,
  credit_limit::float8 AS credit_limit, credit_usage::float8 AS credit_usage, credit_remaining::float8 AS credit_remaining, credit_checked_at, credit_low`;

/** Keys disabled by a probe: they are probed again on their own schedule until they pass. */
export const AUTO_DISABLED = ['auth_failed', 'quota_exhausted'];

/** SQL for per-key probing: the pool pairs to probe, what the last probes found, and the recheck schedule. */
export class KeyHealthStore {
  constructor(private readonly pool: Pool) {}

  /** Every pool pair of existing keys (of `names` only, when given), by key then provider. */
  async pairs(names?: string[]): Promise<PoolPair[]> {
    const [{ rows }, approvals] = await Promise.all([
      this.pool.query<Omit<PoolPair, 'approved'>>(
        `SELECT pk.key_name AS name, pk.provider, pk.position AS slot, p.kind, p.api_base, p.enabled,
                k.state, k.state_reason, k.state_until, k.current_version
         FROM provider_keys pk JOIN providers p ON p.slug = pk.provider JOIN platform_keys k ON k.name = pk.key_name
         WHERE $1::text[] IS NULL OR pk.key_name = ANY($1)
         ORDER BY pk.key_name, pk.provider`,
        [names ?? null],
      ),
      new DestinationsStore(this.pool).all(),
    ]);
    const approved = new Approvals(approvals);
    return rows.map((r) => ({ ...r, approved: !isReservedKey(r.name) && approved.has(r.name, destinationOf(r.kind, r.api_base)) }));
  }

  async health(names?: string[]): Promise<Map<string, KeyHealthRow>> {
    const { rows } = await this.pool.query<KeyHealthRow>(`SELECT ${COLUMNS} FROM key_health WHERE $1::text[] IS NULL OR name = ANY($1)`, [names ?? null]);
    return new Map(rows.map((r) => [r.name, r]));
  }

  async view(name: string): Promise<KeyHealthView | null> {
    const { rows } = await this.pool.query<KeyHealthRow>(`SELECT ${COLUMNS} FROM key_health WHERE name = $1`, [name]);
    return rows[0] ? toKeyHealthView(rows[0]) : null;
  }

  /** Writes a batch of probe results; a key deleted meanwhile is skipped. */
  async save(updates: KeyHealthUpdate[]): Promise<void> {
    if (updates.length === 0) return;
    await this.pool.query(
      `INSERT INTO key_health (name, outcome, http_status, endpoint, detail, latency_ms, key_version, checked_at, ok_streak, fail_streak, next_probe_at,
                               credit_limit, credit_usage, credit_remaining, credit_checked_at, credit_low)
       SELECT u.name, u.outcome, u.http_status, u.endpoint, u.detail, u.latency_ms, u.key_version, u.checked_at, u.ok_streak, u.fail_streak, u.next_probe_at,
              u.credit_limit, u.credit_usage, u.credit_remaining, u.credit_checked_at, u.credit_low
       FROM jsonb_to_recordset($1::jsonb) AS u(name text, outcome text, http_status int, endpoint text, detail text, latency_ms int, key_version int,
         checked_at timestamptz, ok_streak int, fail_streak int, next_probe_at timestamptz, credit_limit numeric, credit_usage numeric,
         credit_remaining numeric, credit_checked_at timestamptz, credit_low boolean)
       WHERE EXISTS (SELECT 1 FROM platform_keys k WHERE k.name = u.name)
       ON CONFLICT (name) DO UPDATE SET outcome = EXCLUDED.outcome, http_status = EXCLUDED.http_status, endpoint = EXCLUDED.endpoint,
         detail = EXCLUDED.detail, latency_ms = EXCLUDED.latency_ms, key_version = EXCLUDED.key_version, checked_at = EXCLUDED.checked_at,
         ok_streak = EXCLUDED.ok_streak, fail_streak = EXCLUDED.fail_streak, next_probe_at = EXCLUDED.next_probe_at,
         credit_limit = CASE WHEN EXCLUDED.credit_checked_at IS NULL THEN key_health.credit_limit ELSE EXCLUDED.credit_limit END,
         credit_usage = CASE WHEN EXCLUDED.credit_checked_at IS NULL THEN key_health.credit_usage ELSE EXCLUDED.credit_usage END,
         credit_remaining = CASE WHEN EXCLUDED.credit_checked_at IS NULL THEN key_health.credit_remaining ELSE EXCLUDED.credit_remaining END,
         credit_checked_at = coalesce(EXCLUDED.credit_checked_at, key_health.credit_checked_at),
         credit_low = EXCLUDED.credit_low`,
      [JSON.stringify(updates)],
    );
  }

  /**
   * Automatically disabled keys of a pool that are due a probe at `now` (their time came, they were
   * never probed, or a new version was written since), and when the next one comes due.
   */
  async due(now: Date): Promise<{ names: string[]; nextAt: Date | null }> {
    const { rows } = await this.pool.query<{ name: string; due: boolean; next_probe_at: Date | null }>(
      `SELECT k.name, (h.name IS NULL OR h.next_probe_at IS NULL OR h.next_probe_at <= $1 OR h.key_version IS DISTINCT FROM k.current_version) AS due,
              h.next_probe_at
       FROM platform_keys k LEFT JOIN key_health h ON h.name = k.name
       WHERE k.state = 'disabled' AND k.state_reason = ANY($2) AND EXISTS (SELECT 1 FROM provider_keys pk WHERE pk.key_name = k.name)
       ORDER BY k.name`,
      [now, AUTO_DISABLED],
    );
    const later = rows.filter((r) => !r.due && r.next_probe_at).map((r) => r.next_probe_at!.getTime());
    return { names: rows.filter((r) => r.due).map((r) => r.name), nextAt: later.length ? new Date(Math.min(...later)) : null };
  }

  /** Pool keys by provider and state (a key missing from platform_keys is not counted). */
  async poolStates(): Promise<Array<{ provider: string; state: KeyState; n: number }>> {
    const { rows } = await this.pool.query<{ provider: string; state: KeyState; n: number }>(
      `SELECT pk.provider, k.state, count(*)::int AS n FROM provider_keys pk JOIN platform_keys k ON k.name = pk.key_name GROUP BY 1, 2 ORDER BY 1, 2`,
    );
    return rows;
  }

  /** The credit each pool key last reported, by provider and slot (never by key name: see metrics-key-names). */
  async credits(): Promise<Array<{ provider: string; slot: number; limit: number | null; remaining: number | null }>> {
    const { rows } = await this.pool.query<{ provider: string; slot: number; limit: number | null; remaining: number | null }>(
      `SELECT pk.provider, pk.position AS slot, h.credit_limit::float8 AS limit, h.credit_remaining::float8 AS remaining
       FROM provider_keys pk JOIN key_health h ON h.name = pk.key_name WHERE h.credit_checked_at IS NOT NULL ORDER BY 1, 2`,
    );
    return rows;
  }
}
