import { displayUrl } from '../url';
import { trimSlashes } from '../url';

/**
 * Polls one of LiteLLM's unauthenticated health endpoints until it answers 2xx:
 * `/health/liveliness` (the process answers) or `/health/readiness` (it is ready for traffic: what a
 * load balancer checks, and what a rollout waits for).
 */
export type HealthPath = '/health/liveliness' | '/health/readiness';

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
  /** Default `/health/liveliness`. */
  path?: HealthPath;
}

export class LivelinessError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'LivelinessError';
  }
}

export function livelinessUrl(baseUrl: string, path: HealthPath = '/health/liveliness'): string {
  return `${trimSlashes(baseUrl)}${path}`;
}

/** The same, fit for an error message (no credentials). */
const shown = (baseUrl: string, path: HealthPath): string => `${displayUrl(baseUrl)}${path}`;

/** One GET; resolves with a short description of what failed, or undefined when it answered 2xx. */
export async function checkLiveliness(baseUrl: string, timeoutMs = 2_000, path: HealthPath = '/health/liveliness'): Promise<string | undefined> {
  try {
    const res = await fetch(livelinessUrl(baseUrl, path), { signal: AbortSignal.timeout(timeoutMs) });
    await res.arrayBuffer().catch(() => undefined);
    return res.ok ? undefined : `HTTP ${res.status}`;
  } catch (err) {
    const e = err as { name?: string; cause?: { code?: string }; message?: string };
    if (e.name === 'TimeoutError') return `no answer within ${timeoutMs} ms`;
    return e.cause?.code ?? e.message ?? 'request failed';
  }
}

/** LiteLLM's readiness: what a load balancer's health check asks. */
export function checkReadiness(baseUrl: string, timeoutMs = 2_000): Promise<string | undefined> {
  return checkLiveliness(baseUrl, timeoutMs, '/health/readiness');
}

/** Resolves once `baseUrl` answers 2xx at `opts.path`; rejects with a LivelinessError that says what was seen last. */
export async function waitForLiveliness(baseUrl: string, opts: LivelinessOptions): Promise<void> {
  const path = opts.path ?? '/health/liveliness';
  const interval = opts.intervalMs ?? 20;
  const giveUpEvery = opts.giveUpEveryMs ?? 500;
  const deadline = Date.now() + opts.timeoutMs;
  let lastAsked = Date.now();
  for (;;) {
    const left = deadline - Date.now();
    const last = await checkLiveliness(baseUrl, Math.max(50, Math.min(opts.requestTimeoutMs ?? 2_000, left)), path);
    if (last === undefined) return;
    if (opts.giveUp && Date.now() - lastAsked >= giveUpEvery) {
      lastAsked = Date.now();
      const reason = await opts.giveUp();
      if (reason) throw new LivelinessError(`${shown(baseUrl, path)} never answered: ${reason}`);
    }
    if (Date.now() + interval >= deadline) {
      throw new LivelinessError(`${shown(baseUrl, path)} did not answer within ${opts.timeoutMs} ms (last: ${last})`);
    }
    await new Promise((r) => setTimeout(r, interval));
  }
}

/** The same for `/health/readiness`. */
export function waitForReadiness(baseUrl: string, opts: Omit<LivelinessOptions, 'path'>): Promise<void> {
  return waitForLiveliness(baseUrl, { ...opts, path: '/health/readiness' });
}
