export interface Backoff {
  baseMs: number;
  maxMs: number;
}

/** Jittered exponential backoff ("equal jitter"): half the capped delay, plus up to half again at random. */
export function backoffDelay(attempt: number, b: Backoff, random: () => number = Math.random): number {
  const capped = Math.min(b.maxMs, b.baseMs * 2 ** Math.max(0, attempt));
  return capped / 2 + random() * (capped / 2);
}
