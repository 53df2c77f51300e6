/**
 * The API paths the dashboard may call. It never reads a key's value: the decrypted endpoint is
 * refused here, before any request leaves the page.
 */
export function apiPathProblem(path: string): string | undefined {
  if (!path.startsWith('/api/v1/')) return 'the dashboard calls only /api/v1/';
  const bare = path.split(/[?#]/)[0]!;
  if (/\/decrypted\/*$/i.test(bare) || /\/decrypted\//i.test(bare)) return 'the dashboard never reads a decrypted key';
  return undefined;
}

/** One path segment from a name the API gave (names are checked by the API, but a segment must never be able to climb). */
export function seg(name: string): string {
  return encodeURIComponent(name);
}

/** An Idempotency-Key: random, printable, without crypto.randomUUID (missing outside secure contexts, e.g. plain HTTP on a LAN host). */
export function idempotencyKey(random: (bytes: Uint8Array) => Uint8Array): string {
  const b = random(new Uint8Array(16));
  return 'ui-' + Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
}
