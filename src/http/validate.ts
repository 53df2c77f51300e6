import { z } from 'zod';
import { formatDuration, parseDuration } from '../duration';
import { describeChar, ENV_VAR_MAX, keyValueProblem } from '../key-rules';
import { ValidationFailed, type FieldError } from './errors';

export const NAME_RE = /^[a-z][a-z0-9_-]{0,62}$/;
export const ENV_VAR_RE = /^[A-Z_][A-Z0-9_]*$/;

const NAME = z.string({ error: 'must be a string' }).regex(NAME_RE, { error: 'must match ^[a-z][a-z0-9_-]{0,62}$' });
const ENV_VAR = z
  .string({ error: 'must be a string' })
  .regex(ENV_VAR_RE, { error: 'must match ^[A-Z_][A-Z0-9_]*$' })
  .max(ENV_VAR_MAX, { error: `must be at most ${ENV_VAR_MAX} characters` });
// The value goes unquoted into litellm.env: key-rules names the first character no reader takes literally.
const API_KEY = z.string({ error: 'is required and must be a string' }).superRefine((v, ctx) => {
  const problem = keyValueProblem(v);
  if (problem) ctx.addIssue({ code: 'custom', message: problem });
});

// RFC 3986's characters: anything else `new URL()` would percent-encode or drop, so the stored
// string and the URL LiteLLM and the prober use would differ.
const URL_CHAR = new Uint8Array(128);
for (const c of "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~:/?#[]@!$&'()*+,;=%") URL_CHAR[c.charCodeAt(0)] = 1;
const HOST_CHAR = new Uint8Array(128);
for (const c of 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._') HOST_CHAR[c.charCodeAt(0)] = 1;
export const URL_MAX = 2048;

/**
 * Why `raw` cannot be an api_base, or undefined. The raw string is what is stored and rendered, so
 * it is checked as it is (no trimming, no normalising): an http(s) URL of RFC 3986 characters, no
 * credentials, and a host that `new URL()` reads exactly as written (`0x7f.1` or `[0::1]` are not).
 */
export function httpUrlProblem(raw: string): string | undefined {
  if (raw.length === 0 || raw.length > URL_MAX) return `must be an http(s) URL of 1 to ${URL_MAX} characters`;
  for (let i = 0; i < raw.length; i++) {
    const c = raw.charCodeAt(i);
    if (c >= 128 || URL_CHAR[c] !== 1) {
      return `character ${describeChar(String.fromCodePoint(raw.codePointAt(i)!))} at position ${i + 1} is not allowed in a URL (no whitespace, controls or non-ASCII)`;
    }
  }
  const scheme = raw.startsWith('https://') ? 8 : raw.startsWith('http://') ? 7 : 0;
  if (!scheme) return 'must start with http:// or https://';
  let end = scheme;
  while (end < raw.length && raw[end] !== '/' && raw[end] !== '?' && raw[end] !== '#') end++;
  const authority = raw.slice(scheme, end);
  // Credentials inside a URL would be stored, rendered and shown in plain text.
  if (authority.includes('@')) return 'must be an http(s) URL without user:password@';
  const bracket = authority.startsWith('[') ? authority.indexOf(']') : -1;
  const colon = authority.indexOf(':', bracket + 1);
  const host = colon < 0 ? authority : authority.slice(0, colon);
  const port = colon < 0 ? undefined : authority.slice(colon + 1);
  if (!host) return 'must name a host';
  if (bracket < 0) {
    for (let i = 0; i < host.length; i++) if (HOST_CHAR[host.charCodeAt(i)] !== 1) return 'must name a host of letters, digits, - . _ (or an [IPv6] address)';
  } else if (bracket !== host.length - 1) return 'must name a host of letters, digits, - . _ (or an [IPv6] address)';
  if (port !== undefined) {
    let digits = port.length > 0 && port.length <= 5;
    for (let i = 0; digits && i < port.length; i++) digits = port.charCodeAt(i) >= 48 && port.charCodeAt(i) <= 57;
    if (!digits || Number(port) > 65535) return 'must have a port from 0 to 65535';
  }
  let u: URL;
  try {
    u = new URL(raw);
  } catch {
    return 'must be an http(s) URL';
  }
  if (u.hostname !== host.toLowerCase()) return `must write its host as it is read (${u.hostname})`;
  return undefined;
}

const HTTP_URL = z.string({ error: 'must be a string' }).superRefine((v, ctx) => {
  const problem = httpUrlProblem(v);
  if (problem) ctx.addIssue({ code: 'custom', message: problem });
});

export const YEAR_MIN = 1970;
export const YEAR_MAX = 9999;
// Date, or date and time with seconds and milliseconds optional and an offset required: a time
// without one would be read in whatever zone the server runs in.
const ISO = /^(\d{4})-(\d{2})-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,3}))?)?(?:Z|([+-])(\d{2}):(\d{2})))?$/;
const TIMESTAMP_RULE = `must be an ISO 8601 date (2025-12-31) or time with offset (2025-12-31T23:59:59Z), years ${YEAR_MIN} to ${YEAR_MAX}`;

const daysIn = (y: number, m: number): number => (m === 2 ? (y % 4 === 0 && (y % 100 !== 0 || y % 400 === 0) ? 29 : 28) : [4, 6, 9, 11].includes(m) ? 30 : 31);

/**
 * Why `raw` is not a timestamp keyplane stores, or undefined. Only real calendar dates and times
 * (no 2024-02-30, no 24:00, no leap second): `new Date()` would roll them over, and the stored
 * instant would not be the one that was sent.
 */
export function timestampProblem(raw: string): string | undefined {
  const m = ISO.exec(raw);
  if (!m) return TIMESTAMP_RULE;
  const [y, mo, d] = [Number(m[1]), Number(m[2]), Number(m[3])];
  if (y < YEAR_MIN || y > YEAR_MAX) return TIMESTAMP_RULE;
  if (mo < 1 || mo > 12 || d < 1 || d > daysIn(y, mo)) return `${TIMESTAMP_RULE}: ${m[1]}-${m[2]}-${m[3]} is not a calendar date`;
  if (m[4] !== undefined && (Number(m[4]) > 23 || Number(m[5]) > 59 || Number(m[6] ?? 0) > 59)) return `${TIMESTAMP_RULE}: the time is out of range`;
  if (m[8] !== undefined && (Number(m[9]) > 23 || Number(m[10]) > 59)) return `${TIMESTAMP_RULE}: the offset is out of range`;
  return undefined;
}

const TIMESTAMP = z.string({ error: TIMESTAMP_RULE }).superRefine((v, ctx) => {
  const problem = timestampProblem(v);
  if (problem) ctx.addIssue({ code: 'custom', message: problem });
});

// Schemas are immutable: build each once, not per request.
export const name = () => NAME;
export const envVar = () => ENV_VAR;
export const apiKey = () => API_KEY;
export const httpUrl = () => HTTP_URL;
export const timestamp = () => TIMESTAMP;

/**
 * A whole number in a query string: digits only (`Number()` would also take `0x10`, `1e2` or
 * ` 5 `), given once.
 */
export function queryInt(min: number, max: number, rule = `must be a whole number from ${min} to ${max}`) {
  return z
    .string({ error: (i) => (Array.isArray(i.input) ? 'must be given once' : rule) })
    .regex(/^\d{1,10}$/, { error: rule })
    .transform(Number)
    .pipe(z.number().min(min, { error: rule }).max(max, { error: rule }));
}

/** A string in a query string, given once. */
export function queryString(schema: z.ZodType<string, string> = z.string()) {
  return z.string({ error: (i) => (Array.isArray(i.input) ? 'must be given once' : 'must be a string') }).pipe(schema);
}

/** A field's name in an error: its path joined with dots, an empty key shown as "". */
export function fieldPath(parts: ReadonlyArray<PropertyKey>): string {
  return parts.map((p) => (p === '' ? '""' : String(p))).join('.') || '(body)';
}

/** Validates `input` against `schema`; every problem is reported with its field path and rule. */
export function parse<T>(schema: z.ZodType<T>, input: unknown, root = ''): T {
  const r = schema.safeParse(input);
  if (r.success) return r.data;
  const at = (path: ReadonlyArray<PropertyKey>): string => fieldPath(root ? [root, ...path] : path);
  const errors: FieldError[] = r.error.issues.flatMap((i) => {
    // One issue names every unknown key of an object: each is its own field.
    if (i.code === 'unrecognized_keys') return i.keys.map((k) => ({ field: at([...i.path, k]), rule: 'is not a known field' }));
    const rule = i.code === 'invalid_type' && /received undefined/.test(i.message) ? 'is required' : i.message;
    return [{ field: at(i.path), rule }];
  });
  // One entry per field, every rule it broke.
  const merged = new Map<string, string[]>();
  for (const e of errors) {
    const rules = merged.get(e.field) ?? [];
    if (!rules.includes(e.rule)) rules.push(e.rule);
    merged.set(e.field, rules);
  }
  throw new ValidationFailed([...merged].map(([field, rules]) => ({ field, rule: rules.join('; ') })));
}

/** A duration with a unit (`10m`, `24h`) of at most `maxMs`, as milliseconds; `example` goes into the type error. */
export function durationAtMost(maxMs: number, example: string) {
  return z.string({ error: `must be a duration such as ${example}` }).transform((raw, ctx): number => {
    const d = parseDuration(raw);
    if ('problem' in d) ctx.addIssue({ code: 'custom', message: d.problem });
    else if (d.ms > maxMs) ctx.addIssue({ code: 'custom', message: `must be at most ${formatDuration(maxMs)}` });
    else return d.ms;
    return z.NEVER;
  });
}

// Printable ASCII, as the IETF draft's examples: it is stored and shown back in errors.
const IDEMPOTENCY_KEY = /^[\x21-\x7e]{1,255}$/;

/** The `Idempotency-Key` header, checked; undefined when the request has none. */
export function idempotencyKey(header: string | undefined): string | undefined {
  if (header === undefined) return undefined;
  if (!IDEMPOTENCY_KEY.test(header)) throw new ValidationFailed([{ field: 'Idempotency-Key', rule: 'must be 1 to 255 printable ASCII characters without spaces' }]);
  return header;
}
