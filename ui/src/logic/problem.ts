/** The admin API's errors are problem+json: the dashboard shows their title and detail as sent. */

export interface Problem {
  status: number;
  title: string;
  detail: string;
  /** Field errors of a 400 (`{field, rule}`). */
  errors: Array<{ field: string; rule: string }>;
  requestId?: string;
}

function str(v: unknown): string | undefined {
  return typeof v === 'string' && v.length ? v : undefined;
}

/** Reads an error answer: problem+json when the server sent one, otherwise the status line. */
export function problemOf(status: number, statusText: string, contentType: string | null, body: string): Problem {
  const fallback: Problem = { status, title: statusText || `HTTP ${status}`, detail: `the server answered ${status}`, errors: [] };
  if (!contentType || !/json/i.test(contentType)) return fallback;
  let parsed: unknown;
  try {
    parsed = JSON.parse(body);
  } catch {
    return fallback;
  }
  if (!parsed || typeof parsed !== 'object') return fallback;
  const p = parsed as Record<string, unknown>;
  const errors = Array.isArray(p.errors)
    ? p.errors.filter((e): e is { field: string; rule: string } => !!e && typeof e === 'object' && typeof (e as Record<string, unknown>).field === 'string' && typeof (e as Record<string, unknown>).rule === 'string')
    : [];
  return {
    status,
    title: str(p.title) ?? fallback.title,
    detail: str(p.detail) ?? fallback.detail,
    errors,
    ...(str(p.request_id) ? { requestId: str(p.request_id) } : {}),
  };
}

/** A fetch that never got an answer (network down, server stopped). */
export function networkProblem(err: unknown): Problem {
  return { status: 0, title: 'No answer from keyplane', detail: err instanceof Error ? err.message : String(err), errors: [] };
}
