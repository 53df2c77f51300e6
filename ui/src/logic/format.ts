/** How values read on screen. Pure: no DOM, so the tests run it in Node. */

export type Tone = 'ok' | 'warn' | 'bad' | 'unknown';

export interface StatusLook {
  /** A symbol beside the word, so the state never rests on colour alone. */
  icon: string;
  text: string;
  tone: Tone;
}

const STATUS: Record<string, StatusLook> = {
  healthy: { icon: '✔', text: 'healthy', tone: 'ok' },
  degraded: { icon: '▲', text: 'degraded', tone: 'warn' },
  down: { icon: '✖', text: 'down', tone: 'bad' },
  unknown: { icon: '?', text: 'unknown', tone: 'unknown' },
};

/** A provider's or LiteLLM's health status. */
export function statusLook(status: string | null | undefined): StatusLook {
  return STATUS[status ?? 'unknown'] ?? { icon: '?', text: String(status), tone: 'unknown' };
}

/** A reload's or render's result. */
export function resultLook(status: string | null | undefined): StatusLook {
  switch (status) {
    case 'ok':
    case 'changed':
    case 'unchanged':
      return { icon: '✔', text: status, tone: 'ok' };
    case 'skipped':
      return { icon: '–', text: 'skipped', tone: 'unknown' };
    case 'failed':
    case 'rolled-back':
      return { icon: '✖', text: status, tone: 'bad' };
    case null:
    case undefined:
      return { icon: '–', text: 'none yet', tone: 'unknown' };
    default:
      return { icon: '…', text: status, tone: 'warn' };
  }
}

/** A pool key's state: whether it is in service, and why not. */
export function keyStateLook(state: string | null | undefined, reason: string | null | undefined): StatusLook & { inService: boolean } {
  const why = reason ? ` (${reason})` : '';
  switch (state) {
    case 'active':
      return { icon: '✔', text: 'in service', tone: 'ok', inService: true };
    case 'cooling':
      return { icon: '▲', text: `cooling${why}, still in service`, tone: 'warn', inService: true };
    case 'retiring':
      return { icon: '▲', text: `retiring${why}, still in service`, tone: 'warn', inService: true };
    case 'disabled':
      return { icon: '✖', text: `out of service${why}`, tone: 'bad', inService: false };
    default:
      return { icon: '?', text: state ? String(state) : 'not in a pool', tone: 'unknown', inService: false };
  }
}

const SEVERITY: Record<string, number> = { down: 0, degraded: 1, healthy: 2, unknown: 3 };

/** Providers in the order an on-call reads them: down first, then degraded, healthy, and never probed last; by name within. */
export function bySeverity<T extends { slug: string; status: string }>(items: T[]): T[] {
  const rank = (s: string): number => SEVERITY[s] ?? 3;
  return [...items].sort((a, b) => rank(a.status) - rank(b.status) || (a.slug < b.slug ? -1 : a.slug > b.slug ? 1 : 0));
}

/** A stored failure (a render's `{stage, message}`, or a plain string), as one line. */
export function errorText(e: unknown): string {
  if (e === null || e === undefined) return '';
  if (typeof e === 'string') return e;
  const o = e as { stage?: unknown; message?: unknown };
  if (typeof o.message === 'string') return typeof o.stage === 'string' ? `${o.stage}: ${o.message}` : o.message;
  return compactJson(e);
}

export function latencyText(ms: number | null | undefined): string {
  if (ms === null || ms === undefined || !Number.isFinite(ms)) return 'no latency';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  return `${(ms / 1000).toFixed(ms < 10_000 ? 1 : 0)} s`;
}

const UNITS: Array<[number, string]> = [
  [86_400_000, 'd'],
  [3_600_000, 'h'],
  [60_000, 'min'],
  [1000, 's'],
];

/** "5 min ago", "in 3 d", "just now". */
export function relativeTime(iso: string | null | undefined, now: number): string {
  if (!iso) return 'never';
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return 'unknown time';
  const diff = now - t;
  const abs = Math.abs(diff);
  if (abs < 5000) return 'just now';
  const [size, unit] = UNITS.find(([s]) => abs >= s) ?? UNITS[UNITS.length - 1]!;
  const n = Math.floor(abs / size);
  return diff >= 0 ? `${n} ${unit} ago` : `in ${n} ${unit}`;
}

/** Keys that expire within this many days stand out (the API's "expiring" uses 14 days too). */
const EXPIRING_DAYS = 14;

export interface Expiry {
  level: 'none' | 'ok' | 'expiring' | 'expired';
  text: string;
}

export function expiryStanding(expiresAt: string | null | undefined, now: number): Expiry {
  if (!expiresAt) return { level: 'none', text: 'no expiry' };
  const t = Date.parse(expiresAt);
  if (Number.isNaN(t)) return { level: 'none', text: 'no expiry' };
  const days = (t - now) / 86_400_000;
  const date = expiresAt.slice(0, 10);
  if (days <= 0) return { level: 'expired', text: `expired ${relativeTime(expiresAt, now)} (${date})` };
  if (days < EXPIRING_DAYS) {
    const left = Math.floor(days);
    return { level: 'expiring', text: `expires ${left === 0 ? 'within a day' : `in ${left} day${left === 1 ? '' : 's'}`} (${date})` };
  }
  return { level: 'ok', text: `expires ${date}` };
}

export interface Credit {
  limit: number | null;
  usage?: number | null;
  remaining: number | null;
  low?: boolean;
}

export function creditText(c: Credit | null | undefined): { text: string; low: boolean } {
  if (!c || (c.remaining === null && c.limit === null)) return { text: 'not reported', low: false };
  const money = (n: number): string => (Math.abs(n) >= 100 ? n.toFixed(0) : n.toFixed(2));
  if (c.limit === null) return { text: c.remaining === null ? 'no limit' : `${money(c.remaining)} left (no limit)`, low: Boolean(c.low) };
  const remaining = c.remaining ?? c.limit - (c.usage ?? 0);
  const pct = c.limit > 0 ? Math.round((remaining / c.limit) * 100) : 0;
  return { text: `${money(remaining)} of ${money(c.limit)} left (${pct}%)${c.low ? ', low' : ''}`, low: Boolean(c.low) };
}

/** A fingerprint is long; its start is enough to tell two values apart on screen (the whole one is in the title). */
export function shortFingerprint(fp: string | null | undefined): string {
  if (!fp) return '–';
  const bare = fp.replace(/^[a-z0-9-]+:/i, '');
  return bare.length > 12 ? `${bare.slice(0, 12)}…` : bare;
}

export function shortHash(h: string | null | undefined): string {
  return h ? h.slice(0, 12) : '–';
}

/** A value of unknown shape (audit details, skipped deployments), as one line of text. */
export function compactJson(v: unknown, max = 300): string {
  if (v === null || v === undefined) return '';
  const s = typeof v === 'string' ? v : JSON.stringify(v);
  return s.length > max ? `${s.slice(0, max - 1)}…` : s;
}

/** A deployment the render left out (`{model_name, provider, reason, detail?, key?}`), in words; anything else as JSON. */
export function skippedText(v: unknown): string {
  const d = (v ?? {}) as Record<string, unknown>;
  if (typeof d.model_name !== 'string' || typeof d.reason !== 'string') return compactJson(v);
  const via = typeof d.key === 'string' ? `${String(d.provider)}, key ${d.key}` : String(d.provider);
  return `${d.model_name} via ${via}: ${d.reason.replace(/_/g, ' ')}${typeof d.detail === 'string' ? ` (${d.detail})` : ''}`;
}

/** A render warning (`{kind, ...}`): its kind in words, then its fields. */
export function warningText(v: unknown): string {
  const w = (v ?? {}) as Record<string, unknown>;
  if (typeof w.kind !== 'string') return compactJson(v);
  const rest = Object.entries(w).filter(([k]) => k !== 'kind');
  return `${w.kind.replace(/_/g, ' ')}${rest.length ? `: ${rest.map(([k, x]) => `${k} ${typeof x === 'string' ? x : JSON.stringify(x)}`).join(', ')}` : ''}`;
}
