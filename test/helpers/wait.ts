import { clearTimeout as realClearTimeout, setTimeout as realSetTimeout } from 'node:timers';
import type { SafeEmitter } from '../../src/events';

// node:timers' own exports stay real when jest fakes the global timers, so these deadlines hold in
// tests with fake timers too: advancing fake time neither fires them early nor stops them firing.

/**
 * Resolves with the first `event` that satisfies `match`, or rejects after `timeoutMs` of real time.
 * Call it before the action (a fake-timer advance, a write) that makes the event happen.
 */
export function nextEvent<E extends { [K in keyof E]: unknown }, K extends keyof E & string>(
  emitter: SafeEmitter<E>,
  event: K,
  match: (p: E[K]) => boolean = () => true,
  timeoutMs = 10_000,
): Promise<E[K]> {
  return new Promise((resolve, reject) => {
    const timer = realSetTimeout(() => {
      off();
      reject(new Error(`timed out after ${timeoutMs} ms waiting for ${event}`));
    }, timeoutMs);
    const off = emitter.on(event, (p) => {
      if (!match(p)) return;
      realClearTimeout(timer);
      off();
      resolve(p);
    });
  });
}

/** Polls `check` every few ms of real time until it holds, or throws after `timeoutMs` naming `what`. */
export async function until(what: string, check: () => boolean | Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  // A timer, not Date.now(): fake timers may freeze the clock.
  let late = false;
  const timer = realSetTimeout(() => (late = true), timeoutMs);
  try {
    while (!(await check())) {
      if (late) throw new Error(`timed out after ${timeoutMs} ms waiting until ${what}`);
      await new Promise((r) => realSetTimeout(r, 5));
    }
  } finally {
    realClearTimeout(timer);
  }
}

/**
 * Keeps every `event` from now on, for a wait whose match is known only after the trigger (the
 * revision of a render, say): `waitFor` looks at what already came before it listens.
 */
export function recordEvents<E extends { [K in keyof E]: unknown }, K extends keyof E & string>(
  emitter: SafeEmitter<E>,
  event: K,
): { seen: Array<E[K]>; waitFor(match: (p: E[K]) => boolean, timeoutMs?: number): Promise<E[K]>; stop(): void } {
  const seen: Array<E[K]> = [];
  const stop = emitter.on(event, (p) => seen.push(p));
  return {
    seen,
    stop,
    waitFor: (match, timeoutMs) => {
      const hit = seen.find(match);
      return hit !== undefined ? Promise.resolve(hit) : nextEvent(emitter, event, match, timeoutMs);
    },
  };
}
