import { EventEmitter } from 'node:events';

/**
 * A typed emitter whose emit never throws: a failing listener is reported to `onListenerError`
 * and the emitter goes on. Tests wait on these events instead of sleeping.
 */
export class SafeEmitter<Events extends { [K in keyof Events]: unknown }> {
  private readonly inner = new EventEmitter();

  constructor(private readonly onListenerError: (err: unknown, event: string) => void = () => undefined) {
    this.inner.setMaxListeners(100);
  }

  on<K extends keyof Events & string>(event: K, listener: (payload: Events[K]) => void): () => void {
    this.inner.on(event, listener);
    return () => this.inner.off(event, listener);
  }

  once<K extends keyof Events & string>(event: K, listener: (payload: Events[K]) => void): () => void {
    const off = this.on(event, (payload) => {
      off();
      listener(payload);
    });
    return off;
  }

  emit<K extends keyof Events & string>(event: K, payload: Events[K]): void {
    for (const listener of this.inner.listeners(event)) {
      try {
        (listener as (p: Events[K]) => void)(payload);
      } catch (err) {
        try {
          this.onListenerError(err, event);
        } catch {
          // The error reporter itself failed; nothing sensible is left to do.
        }
      }
    }
  }

  /** Resolves with the first payload of `event` that satisfies `match`, or rejects after `timeoutMs`. */
  waitFor<K extends keyof Events & string>(event: K, match: (p: Events[K]) => boolean = () => true, timeoutMs = 10_000): Promise<Events[K]> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        off();
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${event}`));
      }, timeoutMs);
      const off = this.on(event, (p) => {
        if (!match(p)) return;
        clearTimeout(timer);
        off();
        resolve(p);
      });
    });
  }
}
