import type { RequestHandler } from 'express';
import { ValidationFailed, type FieldError } from './errors';
import { fieldPath } from './validate';

/**
 * Postgres refuses U+0000 in text and jsonb, and a lone UTF-16 surrogate is no character at all
 * (it reaches Postgres as U+FFFD in text, and as an error in jsonb). Either would turn a request
 * into a 500, or store something other than what was sent. One guard for every route refuses them
 * anywhere in the query string or the JSON body, values and keys, at any depth, naming the field.
 * So is a key named `__proto__`, which JavaScript copies of the body silently drop.
 */

const MAX_REPORTED = 20;

/** The first code unit that cannot be stored, as `[index, what it is and why]`, or undefined. */
export function unstorableChar(s: string): [number, string] | undefined {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 0) return [i, 'U+0000 (NUL): it cannot be stored'];
    if (c >= 0xd800 && c <= 0xdfff) {
      const next = i + 1 < s.length ? s.charCodeAt(i + 1) : 0;
      if (c <= 0xdbff && next >= 0xdc00 && next <= 0xdfff) {
        i++;
        continue;
      }
      return [i, `a lone surrogate (U+${c.toString(16).toUpperCase()}): it is not Unicode text`];
    }
  }
  return undefined;
}

/** A key as it appears in a field path: characters that cannot be shown are written as \uXXXX. */
export function fieldSegment(key: string): string {
  if (!unstorableChar(key)) return key;
  let out = '';
  for (let i = 0; i < key.length; i++) {
    const c = key.charCodeAt(i);
    out += c === 0 || (c >= 0xd800 && c <= 0xdfff) ? `\\u${c.toString(16).padStart(4, '0')}` : key[i];
  }
  return out;
}

interface Frame {
  value: unknown;
  segment: string | undefined;
  parent: Frame | undefined;
}

function pathOf(f: Frame, extra?: string): string {
  const parts: string[] = extra === undefined ? [] : [extra];
  for (let p: Frame | undefined = f; p; p = p.parent) if (p.segment !== undefined) parts.push(p.segment);
  return fieldPath(parts.reverse());
}

/**
 * Every string and key in `value` that cannot be stored, with its field path under `root`. Walks
 * with its own stack (a 64 KiB body can nest 30,000 levels deep); paths are built only for problems.
 */
export function unstorableFields(value: unknown, root: string | undefined): FieldError[] {
  const errors: FieldError[] = [];
  const stack: Frame[] = [{ value, segment: root, parent: undefined }];
  while (stack.length && errors.length < MAX_REPORTED) {
    const f = stack.pop()!;
    const v = f.value;
    if (typeof v === 'string') {
      const bad = unstorableChar(v);
      if (bad) errors.push({ field: pathOf(f), rule: `contains, at position ${bad[0] + 1}, ${bad[1]}` });
    } else if (Array.isArray(v)) {
      for (let i = v.length - 1; i >= 0; i--) stack.push({ value: v[i], segment: String(i), parent: f });
    } else if (v !== null && typeof v === 'object') {
      const keys = Object.keys(v);
      for (let i = keys.length - 1; i >= 0; i--) {
        const k = keys[i]!;
        const bad = unstorableChar(k);
        if (bad) errors.push({ field: pathOf(f, fieldSegment(k)), rule: `is a name that contains, at position ${bad[0] + 1}, ${bad[1]}` });
        // JSON.parse keeps it as a key, but every later copy of the object (zod, the renderer) drops it.
        else if (k === '__proto__') errors.push({ field: pathOf(f, k), rule: 'is a name that cannot be stored' });
        else stack.push({ value: (v as Record<string, unknown>)[k], segment: k, parent: f });
      }
    }
  }
  return errors;
}

/** Refuses a request whose query string or JSON body holds text that cannot be stored (400). */
export function inputGuard(): RequestHandler {
  return (req, _res, next) => {
    const errors = [...unstorableFields(req.query, 'query'), ...(req.body === undefined ? [] : unstorableFields(req.body, undefined))];
    if (errors.length) return next(new ValidationFailed(errors.slice(0, MAX_REPORTED)));
    next();
  };
}
