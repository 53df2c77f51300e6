import { displayUrl } from '../url';
import { trimSlashes } from '../url';
/** Polls LiteLLM's `GET /health/liveliness` (no auth) until it answers 2xx. */

export interface LivelinessOptions {
  timeoutMs: number;
  /** Pause between polls; a short one keeps the time a reload adds after LiteLLM is up small. */
  intervalMs?: number;
  /** Per-request timeout. */
  requestTimeoutMs?: number;
  /**
   * Called between polls; a returned string ends the wait early with that reason (for example
   * "the container exited"), so a crashed process does not cost the whole timeout.
   */
  giveUp?: () => Promise<string | undefined>;
  /** How often `giveUp` is asked, at most. */
  giveUpEveryMs?: number;
}

export class LivelinessError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'LivelinessError';
  }
}

export function livelinessUrl(baseUrl: string): string {
  return `${trimSlashes(baseUrl)}/health/liveliness`;
}

/** The same, fit for an error message (no credentials). */
const shown = (baseUrl: string): string => `${displayUrl(baseUrl)}/health/liveliness`;

/** One GET; resolves with a short description of what failed, or undefined when it answered 2xx. */
export async function checkLiveliness(baseUrl: string, timeoutMs = 2_000): Promise<string | undefined> {
  try {
    const res = await fetch(livelinessUrl(baseUrl), { signal: AbortSignal.timeout(timeoutMs) });
    await res.arrayBuffer().catch(() => undefined);
    return res.ok ? undefined : `HTTP ${res.status}`;
  } catch (err) {
    const e = err as { name?: string; cause?: { code?: string }; message?: string };
    if (e.name === 'TimeoutError') return `no answer within ${timeoutMs} ms`;
    return e.cause?.code ?? e.message ?? 'request failed';
  }
}

/** Resolves once `baseUrl` is live; rejects with a LivelinessError that says what was seen last. */
export async function waitForLiveliness(baseUrl: string, opts: LivelinessOptions): Promise<void> {
  const interval = opts.intervalMs ?? 20;
  const giveUpEvery = opts.giveUpEveryMs ?? 500;
  const deadline = Date.now() + opts.timeoutMs;
  let lastAsked = Date.now();
  for (;;) {
    const left = deadline - Date.now();
    const last = await checkLiveliness(baseUrl, Math.max(50, Math.min(opts.requestTimeoutMs ?? 2_000, left)));
    if (last === undefined) return;
    if (opts.giveUp && Date.now() - lastAsked >= giveUpEvery) {
      lastAsked = Date.now();
      const reason = await opts.giveUp();
      if (reason) throw new LivelinessError(`${shown(baseUrl)} never answered: ${reason}`);
    }
    if (Date.now() + interval >= deadline) {
      throw new LivelinessError(`${shown(baseUrl)} did not answer within ${opts.timeoutMs} ms (last: ${last})`);
    }
    await new Promise((r) => setTimeout(r, interval));
  }
}
