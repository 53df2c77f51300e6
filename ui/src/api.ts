import { apiPathProblem } from './logic/paths';
import { networkProblem, problemOf, type Problem } from './logic/problem';

/** An error answer of the admin API: its problem+json, shown as sent. */
export class ApiError extends Error {
  constructor(readonly problem: Problem) {
    super(`${problem.title}: ${problem.detail}`);
  }
}

export interface Page<T> {
  items: T[];
  next_cursor?: string | null;
}

/**
 * The admin API with the signed-in token. A 401 ends the session (the token was revoked, or a
 * JWT expired): `onUnauthorized` signs out.
 */
export class Api {
  constructor(
    private readonly token: string,
    private readonly onUnauthorized: (p: Problem) => void,
    private readonly fetchFn: typeof fetch = (input, init) => fetch(input, init),
  ) {}

  get<T>(path: string, signal?: AbortSignal): Promise<T> {
    return this.send<T>('GET', path, undefined, {}, signal);
  }

  /** Every page of a list (at most `maxPages` of 1,000): the dashboard shows whole lists. */
  async all<T>(path: string, maxPages = 20): Promise<T[]> {
    const out: T[] = [];
    let cursor: string | null | undefined;
    for (let i = 0; i < maxPages; i++) {
      const sep = path.includes('?') ? '&' : '?';
      const page = await this.get<Page<T>>(`${path}${sep}limit=1000${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`);
      out.push(...page.items);
      cursor = page.next_cursor;
      if (!cursor) break;
    }
    return out;
  }

  async send<T>(method: string, path: string, body?: unknown, headers: Record<string, string> = {}, signal?: AbortSignal): Promise<T> {
    const res = await this.raw(method, path, body, headers, signal);
    if (res.status === 204) return undefined as T;
    return (await res.json()) as T;
  }

  /** The answer itself, for a stream (GET /api/v1/admin/events). Errors are thrown as for send(). */
  async raw(method: string, path: string, body?: unknown, headers: Record<string, string> = {}, signal?: AbortSignal): Promise<Response> {
    const refused = apiPathProblem(path);
    if (refused) throw new ApiError({ status: 0, title: 'Not sent', detail: refused, errors: [] });
    let res: Response;
    try {
      res = await this.fetchFn(path, {
        method,
        headers: { Authorization: `Bearer ${this.token}`, Accept: 'application/json', ...(body !== undefined ? { 'Content-Type': 'application/json' } : {}), ...headers },
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: 'no-store',
        credentials: 'omit',
        signal,
      });
    } catch (err) {
      if (signal?.aborted) throw err;
      throw new ApiError(networkProblem(err));
    }
    if (res.ok) return res;
    const problem = problemOf(res.status, res.statusText, res.headers.get('content-type'), await res.text().catch(() => ''));
    if (res.status === 401) this.onUnauthorized(problem);
    throw new ApiError(problem);
  }
}

export function problemFrom(err: unknown): Problem {
  return err instanceof ApiError ? err.problem : networkProblem(err);
}
