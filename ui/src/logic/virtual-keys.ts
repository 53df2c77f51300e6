/** The virtual keys form, read into the admin API's body (POST /api/v1/admin/virtual-keys). */

export interface FieldError {
  field: string;
  rule: string;
}

export interface VirtualKeyBody {
  alias: string;
  models?: string[];
  max_budget?: number;
  budget_duration?: string;
  rpm_limit?: number;
  tpm_limit?: number;
  duration?: string;
}

// LiteLLM reads budget periods and lifetimes itself, in its own units (the API checks the same).
const LITELLM_DURATION = /^[1-9]\d{0,5}(s|m|h|d|w|mo)$/;
// keyplane keeps the grace period, in its units.
const GRACE = /^\d+(ms|s|m|h|d)$/;

/** Empty fields are left out (the API's defaults apply); what is given must make sense before it is sent. */
export function virtualKeyBody(f: Record<string, string>): { body: VirtualKeyBody } | { errors: FieldError[] } {
  const errors: FieldError[] = [];
  const v = (k: string): string => (f[k] ?? '').trim();
  const alias = v('alias');
  if (!alias) errors.push({ field: 'alias', rule: 'is required' });
  const body: VirtualKeyBody = { alias };
  const models = v('models')
    .split(/[\s,]+/)
    .filter(Boolean);
  if (models.length) body.models = [...new Set(models)];
  const num = (k: 'max_budget' | 'rpm_limit' | 'tpm_limit', whole: boolean): void => {
    const raw = v(k);
    if (!raw) return;
    const n = Number(raw);
    if (!Number.isFinite(n) || n < 0 || (whole && !Number.isInteger(n))) errors.push({ field: k, rule: whole ? 'must be a whole number, 0 or more' : 'must be a number, 0 or more' });
    else body[k] = n;
  };
  num('max_budget', false);
  num('rpm_limit', true);
  num('tpm_limit', true);
  for (const k of ['budget_duration', 'duration'] as const) {
    const raw = v(k);
    if (!raw) continue;
    if (!LITELLM_DURATION.test(raw)) errors.push({ field: k, rule: 'must be a whole number and s, m, h, d, w or mo, such as 30d' });
    else body[k] = raw;
  }
  return errors.length ? { errors } : { body };
}

/** The grace period of a rotation: the old key keeps working this long. */
export function graceBody(raw: string): { body: { grace_period: string } } | { errors: FieldError[] } {
  const g = raw.trim();
  if (!GRACE.test(g)) return { errors: [{ field: 'grace_period', rule: 'must be a duration such as 10m, 1h or 1d' }] };
  return { body: { grace_period: g } };
}

/** "12.50 spent of 100.00 per 30d" */
export function budgetText(spend: number | null | undefined, max: number | null | undefined, duration: string | null | undefined): string {
  const s = typeof spend === 'number' ? spend.toFixed(2) : '0.00';
  const limit = typeof max === 'number' ? ` of ${max.toFixed(2)}` : ', no budget';
  return `${s} spent${limit}${duration ? ` per ${duration}` : ''}`;
}

export function limitsText(rpm: number | null | undefined, tpm: number | null | undefined): string {
  const parts = [typeof rpm === 'number' ? `${rpm} rpm` : null, typeof tpm === 'number' ? `${tpm} tpm` : null].filter(Boolean);
  return parts.length ? parts.join(', ') : 'no limits';
}
