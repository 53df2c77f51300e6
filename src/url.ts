/** A URL fit for a log line, an error, the API or an alert: no user:password@, no query, no fragment. */
export function displayUrl(raw: string): string {
  try {
    const u = new URL(raw);
    u.username = '';
    u.password = '';
    u.search = '';
    u.hash = '';
    return trimSlashes(u.toString());
  } catch {
    return '(invalid URL)';
  }
}

/** Without trailing slashes (a loop: `/\/+$/` backtracks quadratically on a long run of slashes). */
export function trimSlashes(s: string): string {
  let end = s.length;
  while (end > 0 && s.charCodeAt(end - 1) === 47) end--;
  return s.slice(0, end);
}

