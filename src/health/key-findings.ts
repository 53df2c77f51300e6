import { AUTH_CODES, errorCodes, field, parseJson, type ProbeAnswer } from './probes';

/**
 * What a probe says about a key (not about its provider): `key_health.outcome`. `error` (an outage,
 * a timeout, a 5xx) says nothing about the key and changes no state; `not_approved` and `no_probe`
 * were never sent.
 */
export type KeyOutcome = 'ok' | 'auth_failed' | 'quota_exhausted' | 'rate_limited' | 'error' | 'not_approved' | 'no_probe';

/** Credit the provider reports for the key (OpenRouter's key record); `limit` null: no limit. */
export interface Credit {
  limit: number | null;
  usage: number | null;
  remaining: number | null;
}

export interface KeyFinding {
  outcome: KeyOutcome;
  /** The request that proved it (`GET /api/v1/key`); null when nothing was sent. */
  endpoint: string | null;
  httpStatus: number | null;
  /** Status and the provider's error codes only: its messages can echo the key. */
  detail: string;
  latencyMs: number | null;
  checkedAt: Date;
  /** rate_limited: how long the provider asked to wait (Retry-After), when it said. */
  retryAfterMs: number | null;
  credit: Credit | null;
}

// Spending limits, not rate limits: OpenAI answers 429 with this type when the account is out of credit.
const QUOTA_CODES = /^(insufficient_quota|billing_hard_limit_reached|insufficient_credits)$/i;
/** A Retry-After beyond this is read as this: the key is probed again then anyway. */
export const RETRY_AFTER_MAX_MS = 3_600_000;

export function unsent(outcome: 'not_approved' | 'no_probe', detail: string, now: Date): KeyFinding {
  return { outcome, endpoint: null, httpStatus: null, detail, latencyMs: null, checkedAt: now, retryAfterMs: null, credit: null };
}

/** Judges a probe answer for the key that was sent with it. */
export function keyFinding(answer: ProbeAnswer, apiKey: string, now: Date): KeyFinding {
  if (answer.kind === 'unsupported') return unsent('no_probe', answer.detail, now);
  const base = { endpoint: answer.endpoint, latencyMs: answer.latencyMs, checkedAt: answer.checkedAt, retryAfterMs: null, credit: null };
  if (answer.kind === 'network') return { ...base, outcome: 'error', httpStatus: null, detail: answer.detail };
  const doc = parseJson(answer.body);
  const codes = errorCodes(doc).filter((c) => !apiKey || !c.includes(apiKey));
  const detail = `${answer.endpoint} answered HTTP ${answer.status}${codes.length ? ` (${codes.join(', ')})` : ''}`;
  const http = { ...base, httpStatus: answer.status, detail };
  if (answer.status >= 200 && answer.status <= 299) {
    if (answer.body && doc === undefined) return { ...http, outcome: 'error', detail: `${detail} with a body that is not JSON` };
    const credit = creditOf(doc);
    // A key past its spending limit still reads its own record: the record says it is spent.
    if (credit && credit.limit !== null && credit.remaining !== null && credit.remaining <= 0) {
      return { ...http, outcome: 'quota_exhausted', credit, detail: `${detail}: no credit left (limit ${credit.limit})` };
    }
    return { ...http, outcome: 'ok', credit };
  }
  if (answer.status === 402 || codes.some((c) => QUOTA_CODES.test(c))) return { ...http, outcome: 'quota_exhausted' };
  // Gemini answers a bad key with 400 API_KEY_INVALID rather than 401.
  if (answer.status === 401 || answer.status === 403 || codes.some((c) => AUTH_CODES.test(c))) return { ...http, outcome: 'auth_failed' };
  if (answer.status === 429) return { ...http, outcome: 'rate_limited', retryAfterMs: parseRetryAfter(answer.retryAfter, answer.checkedAt) };
  return { ...http, outcome: 'error' };
}

/** `Retry-After: 120` or an HTTP date, in ms from `now`; undefined when absent or unreadable. */
export function parseRetryAfter(value: string | undefined, now: Date): number | null {
  if (value === undefined) return null;
  const v = value.trim();
  let ms: number;
  if (/^\d{1,10}$/.test(v)) ms = Number(v) * 1000;
  else {
    const at = Date.parse(v);
    if (Number.isNaN(at)) return null;
    ms = at - now.getTime();
  }
  return Math.min(Math.max(ms, 0), RETRY_AFTER_MAX_MS);
}

const num = (v: unknown): number | null => (typeof v === 'number' && Number.isFinite(v) ? v : null);

/** OpenRouter's `GET /key`: `{"data": {"limit", "usage", "limit_remaining"}}`; null for any other answer. */
export function creditOf(doc: unknown): Credit | null {
  const data = field(doc, 'data');
  if (!data || typeof data !== 'object' || !('usage' in data || 'limit' in data)) return null;
  const limit = num(field(data, 'limit'));
  const usage = num(field(data, 'usage'));
  const reported = num(field(data, 'limit_remaining'));
  const remaining = limit === null ? null : (reported ?? (usage === null ? null : limit - usage));
  return { limit, usage, remaining };
}

// Worst first: a key one provider refuses is refused; one that answered ok beats an outage elsewhere.
const RANK: Record<KeyOutcome, number> = { auth_failed: 6, quota_exhausted: 5, rate_limited: 4, ok: 3, error: 2, not_approved: 1, no_probe: 0 };

/**
 * One finding for a key probed at several providers (a key in several pools): the worst outcome
 * wins, since the state is the key's; credit comes from whichever answer reported it.
 */
export function combineFindings(findings: KeyFinding[]): KeyFinding {
  const worst = findings.reduce((a, b) => (RANK[b.outcome] > RANK[a.outcome] ? b : a));
  const credit = worst.credit ?? findings.find((f) => f.credit)?.credit ?? null;
  const retry = findings.map((f) => f.retryAfterMs).filter((v): v is number => v !== null);
  return { ...worst, credit, retryAfterMs: worst.outcome === 'rate_limited' && retry.length ? Math.max(...retry) : worst.retryAfterMs };
}
