import { sendProbe, type ProbeAgents, type ProbeAnswer } from './probes';

export interface ProbeClientOptions {
  /** Requests in flight at most (KEYPLANE_HEALTH_CONCURRENCY). */
  concurrency: number;
  timeoutMs: number;
  /** Cancels every request (the prober's stop()). */
  signal: AbortSignal;
  agents: ProbeAgents;
  now: () => Date;
}

export interface ProbeTargetKey {
  kind: string;
  apiBase: string | null;
  /** Name and version of the key: two asks for the same (kind, api_base, key version) share one request. */
  keyName: string;
  version: number;
  apiKey: string;
}

/**
 * The probe requests of one round (or one recheck): at most `concurrency` at a time, and each
 * (kind, api_base, key version) asked once, so the provider's health probe and its first key's
 * probe are one request, as is a key shared by pools at the same destination.
 */
export class ProbeClient {
  private readonly answers = new Map<string, Promise<ProbeAnswer>>();
  private readonly waiting: Array<() => void> = [];
  private running = 0;

  constructor(private readonly opts: ProbeClientOptions) {}

  get signal(): AbortSignal {
    return this.opts.signal;
  }

  send(t: ProbeTargetKey): Promise<ProbeAnswer> {
    const id = `${t.kind}\u0000${t.apiBase ?? ''}\u0000${t.keyName}\u0000${t.version}`;
    let answer = this.answers.get(id);
    if (!answer) {
      answer = this.limited(() => sendProbe({ kind: t.kind, apiBase: t.apiBase, apiKey: t.apiKey }, { timeoutMs: this.opts.timeoutMs, signal: this.opts.signal, agents: this.opts.agents, now: this.opts.now }));
      this.answers.set(id, answer);
    }
    return answer;
  }

  private async limited<T>(fn: () => Promise<T>): Promise<T> {
    if (this.running >= this.opts.concurrency) await new Promise<void>((resolve) => this.waiting.push(resolve));
    else this.running++;
    try {
      return await fn();
    } finally {
      // The slot passes straight to the next waiter, so `running` never overshoots.
      const next = this.waiting.shift();
      if (next) next();
      else this.running--;
    }
  }
}
