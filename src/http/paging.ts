import { z } from 'zod';
import { queryInt, queryString } from './validate';

export const PAGE_DEFAULT = 100;
export const PAGE_MAX = 1000;

/** One page of a list: `next_cursor` is null on the last page. */
export interface Page<T> {
  items: T[];
  next_cursor: string | null;
}

/** What a store is asked for: `limit` rows after the row that `after` identifies (keyset, never OFFSET). */
export interface PageRequest<K> {
  limit: number;
  after?: K;
}

const CURSOR_RULE = 'must be a next_cursor this list gave out';

/** `?limit=` (default 100, 1 to 1000). */
export const limitParam = () => queryInt(1, PAGE_MAX).default(PAGE_DEFAULT).meta({ description: `page size, 1 to ${PAGE_MAX} (default ${PAGE_DEFAULT})` });

/**
 * `?cursor=`: opaque to callers (base64url of the last row's sort key as JSON); decoded and
 * checked against `key`, the shape of that sort key. Anything else is a 400 on `query.cursor`.
 */
export function cursorParam<K>(key: z.ZodType<K>) {
  return queryString(z.string().max(1024, { error: CURSOR_RULE })).transform((s, ctx): K => {
    let decoded: unknown;
    try {
      if (!/^[A-Za-z0-9_-]+$/.test(s)) throw new Error('not base64url');
      decoded = JSON.parse(Buffer.from(s, 'base64url').toString('utf8'));
    } catch {
      ctx.addIssue({ code: 'custom', message: CURSOR_RULE });
      return z.NEVER;
    }
    const r = key.safeParse(decoded);
    if (!r.success) {
      ctx.addIssue({ code: 'custom', message: CURSOR_RULE });
      return z.NEVER;
    }
    return r.data;
  }).meta({ description: 'the next_cursor of the previous page' });
}

export function encodeCursor(key: unknown): string {
  return Buffer.from(JSON.stringify(key), 'utf8').toString('base64url');
}

/**
 * Rows fetched with `limit + 1` -> the page: the extra row only tells that there is a next page,
 * whose cursor is the sort key of the page's last row.
 */
export function pageOf<T, K>(rows: T[], limit: number, keyOf: (row: T) => K): { items: T[]; next: K | undefined } {
  if (rows.length <= limit) return { items: rows, next: undefined };
  const items = rows.slice(0, limit);
  return { items, next: keyOf(items[items.length - 1]!) };
}

/** The page as the API returns it. */
export function toPage<T, K>(p: { items: T[]; next: K | undefined }): Page<T> {
  return { items: p.items, next_cursor: p.next === undefined ? null : encodeCursor(p.next) };
}
