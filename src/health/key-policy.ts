import type { StateChange } from '../features/key-pools/key-states';
import type { KeyState } from '../sync/desired-state';
import type { KeyFinding } from './key-findings';
import { AUTO_DISABLED, type KeyHealthRow, type KeyHealthUpdate } from './key-health-store';

/**
 * What a probe's finding does to a key: its next state (if any), its streaks, when it is probed
 * again, and whether its credit crossed the alert line. Pure, so the rules read in one place:
 *
 * - 401/403 -> `disabled`/`auth_failed`; 402 or insufficient quota -> `disabled`/`quota_exhausted`:
 *   one failing probe is enough (every request with a revoked key fails).
 * - 429 -> `cooling`/`rate_limited` until Retry-After (or COOL_DEFAULT_MS); still rendered. A cooling
 *   key past its time goes back to `active` on a good probe, or cools again on another 429.
 * - An automatically disabled key is probed again with doubling intervals (recheck min..max); after
 *   `recoverPasses` good probes in a row it is `active` again. A new version starts the count afresh.
 * - Outages (`error`) change nothing; `manual`, `replaced` and `retiring` keys are never moved.
 */

export interface KeyPolicy {
  /** Good probes in a row before an automatically disabled key returns (KEYPLANE_HEALTH_RECOVER_THRESHOLD). */
  recoverPasses: number;
  /** Recheck interval of disabled keys: the first, and the most it doubles to (KEYPLANE_KEY_RECHECK). */
  recheck: { minMs: number; maxMs: number };
  /** KEYPLANE_CREDIT_ALERT: remaining / limit under this is low; 0 turns the alert off. */
  creditAlert: number;
}

/** How long a 429 without Retry-After cools a key. */
export const COOL_DEFAULT_MS = 60_000;

export interface KeyNow {
  state: KeyState;
  state_reason: string | null;
  state_until: Date | null;
  current_version: number;
}

export interface KeyDecision {
  change?: StateChange;
  health: KeyHealthUpdate;
  /** `low`: the credit fell under the line since the last probe (alert once); `rearmed`: it rose above it again. */
  credit?: 'low' | 'rearmed';
}

const isAutoDisabled = (state: KeyState, reason: string | null): boolean => state === 'disabled' && reason !== null && AUTO_DISABLED.includes(reason);

export function decideKey(name: string, key: KeyNow, prev: KeyHealthRow | undefined, f: KeyFinding, policy: KeyPolicy, now: Date): KeyDecision {
  // Streaks are about one value of the key: a new version starts afresh.
  const fresh = !prev || prev.key_version !== key.current_version;
  let okStreak = fresh ? 0 : prev.ok_streak;
  let failStreak = fresh ? 0 : prev.fail_streak;
  const failed = f.outcome === 'auth_failed' || f.outcome === 'quota_exhausted';
  if (f.outcome === 'ok') {
    okStreak++;
    failStreak = 0;
  } else if (failed) {
    failStreak++;
    okStreak = 0;
  }

  const change = nextState(key, f, okStreak, policy, now);
  const after = change ? { state: change.state, reason: change.reason } : { state: key.state, reason: key.state_reason };
  let nextProbeAt: Date | null = null;
  if (isAutoDisabled(after.state, after.reason)) {
    // A pass is followed up soon (recovery needs several in a row); failures back off, doubling.
    const ms = f.outcome === 'ok' ? policy.recheck.minMs : Math.min(policy.recheck.minMs * 2 ** Math.max(failStreak - 1, 0), policy.recheck.maxMs);
    nextProbeAt = new Date(now.getTime() + ms);
  }

  const prevLow = prev?.credit_low ?? false;
  const fraction = f.credit && f.credit.limit !== null && f.credit.limit > 0 && f.credit.remaining !== null ? f.credit.remaining / f.credit.limit : null;
  const low = f.credit ? policy.creditAlert > 0 && fraction !== null && fraction < policy.creditAlert : prevLow;
  const health: KeyHealthUpdate = {
    name,
    outcome: f.outcome,
    http_status: f.httpStatus,
    endpoint: f.endpoint,
    detail: f.detail,
    latency_ms: f.latencyMs,
    key_version: key.current_version,
    checked_at: f.checkedAt,
    ok_streak: okStreak,
    fail_streak: failStreak,
    next_probe_at: nextProbeAt,
    credit_limit: f.credit?.limit ?? null,
    credit_usage: f.credit?.usage ?? null,
    credit_remaining: f.credit?.remaining ?? null,
    credit_checked_at: f.credit ? f.checkedAt : null,
    credit_low: low,
  };
  return { ...(change ? { change } : {}), health, ...(low !== prevLow ? { credit: low ? 'low' : 'rearmed' } : {}) };
}

function nextState(key: KeyNow, f: KeyFinding, okStreak: number, policy: KeyPolicy, now: Date): StateChange | undefined {
  const auto = isAutoDisabled(key.state, key.state_reason);
  // An operator's disable, a rotation's: only a person (or the rotation) moves these.
  if (key.state === 'retiring' || (key.state === 'disabled' && !auto)) return undefined;
  const note = `${f.detail}`.slice(0, 500);
  if (f.outcome === 'auth_failed' || f.outcome === 'quota_exhausted') {
    return key.state === 'disabled' && key.state_reason === f.outcome ? undefined : { state: 'disabled', reason: f.outcome, note };
  }
  const timeUp = key.state_until === null || key.state_until.getTime() <= now.getTime();
  if (f.outcome === 'rate_limited') {
    if (key.state === 'active' || (key.state === 'cooling' && timeUp)) {
      return { state: 'cooling', reason: 'rate_limited', note, until: new Date(now.getTime() + (f.retryAfterMs ?? COOL_DEFAULT_MS)) };
    }
    return undefined;
  }
  if (f.outcome !== 'ok') return undefined;
  if (key.state === 'cooling' && timeUp) return { state: 'active', reason: null };
  if (auto && okStreak >= policy.recoverPasses) return { state: 'active', reason: null };
  return undefined;
}
