import { z } from 'zod';
import { ValidationFailed, type FieldError } from './errors';

export const NAME_RE = /^[a-z][a-z0-9_-]{0,62}$/;
export const ENV_VAR_RE = /^[A-Z_][A-Z0-9_]*$/;
// Printable ASCII without space, quotes (" ' `), backslash or `$`: safe unquoted in systemd, docker and shell env files.
export const API_KEY_RE = /^[!#%&(-[\]-_a-~]{8,4096}$/;

const NAME = z.string({ error: 'must be a string' }).regex(NAME_RE, { error: 'must match ^[a-z][a-z0-9_-]{0,62}$' });
const ENV_VAR = z.string({ error: 'must be a string' }).regex(ENV_VAR_RE, { error: 'must match ^[A-Z_][A-Z0-9_]*$' }).max(128, { error: 'must be at most 128 characters' });
const API_KEY = z
    .string({ error: 'is required and must be a string' })
    .min(8, { error: 'must be 8 to 4096 characters' })
    .max(4096, { error: 'must be 8 to 4096 characters' })
    .regex(API_KEY_RE, { error: 'must be printable ASCII without whitespace, quotes, backquote, backslash or $' });
const HTTP_URL = z.string({ error: 'must be a string' }).max(2048, { error: 'must be at most 2048 characters' }).refine((v) => {
    try {
      const u = new URL(v);
      // Credentials inside a URL would be stored, rendered and shown in plain text.
      return /^https?:$/.test(u.protocol) && !u.username && !u.password;
    } catch {
      return false;
    }
  }, { error: 'must be an http(s) URL without user:password@' });
const TIMESTAMP = z.string({ error: 'must be an ISO 8601 timestamp' }).refine((v) => !Number.isNaN(Date.parse(v)) && /^\d{4}-\d{2}-\d{2}/.test(v), {
    error: 'must be an ISO 8601 timestamp',
  });

// Schemas are immutable: build each once, not per request.
export const name = () => NAME;
export const envVar = () => ENV_VAR;
export const apiKey = () => API_KEY;
export const httpUrl = () => HTTP_URL;
export const timestamp = () => TIMESTAMP;

/** Validates `input` against `schema`; every problem is reported with its field path and rule. */
export function parse<T>(schema: z.ZodType<T>, input: unknown, root = ''): T {
  const r = schema.safeParse(input);
  if (r.success) return r.data;
  const errors: FieldError[] = r.error.issues.map((i) => {
    const p = [root, ...i.path.map(String)].filter(Boolean).join('.');
    let rule = i.message;
    if (i.code === 'unrecognized_keys') {
      return { field: [p, ...(i.keys ?? [])].filter(Boolean).join('.'), rule: 'is not a known field' };
    }
    if (i.code === 'invalid_type' && /received undefined/.test(i.message)) rule = 'is required';
    return { field: p || '(body)', rule };
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
