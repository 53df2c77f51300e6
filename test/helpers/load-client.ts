/** One request of a LoadClient: when it ran (ms since the client started) and how it ended. */
export interface RequestRecord {
  startMs: number;
  endMs: number;
  ok: boolean;
  /** The HTTP status, when there was an answer. */
  status?: number;
  /** What went wrong on the way (ECONNREFUSED, a timeout...), when there was no answer. */
  error?: string;
  /** The stand-in that answered (its STANDIN_NAME), from its /env. */
  replica?: string;
}

/** A stretch in which requests failed: from the start of its first failed request to the end of the next success. */
export interface Outage {
  fromMs: number;
  toMs: number;
  failed: number;
}

export interface LoadClientOptions {
  /** Requests in flight at once (each a loop of its own). */
  workers?: number;
  timeoutMs?: number;
  /**
   * After a failure only: a target that refuses at once would otherwise turn the loop into a busy
   * spin that takes the CPU the restarting target needs. Successes follow each other without pause.
   */
  pauseAfterFailureMs?: number;
}

/**
 * A client of LiteLLM (here the stand-in's `GET /env`) that sends requests without pause until
 * stopped, and records every one. Loopback only; bounded by its few workers.
 */
export class LoadClient {
  readonly records: RequestRecord[] = [];
  readonly t0 = Date.now();
  private running = false;
  private loops: Array<Promise<void>> = [];

  constructor(
    private readonly url: string,
    private readonly opts: LoadClientOptions = {},
  ) {}

  /** ms since the client started, on the clock of its records. */
  now(): number {
    return Date.now() - this.t0;
  }

  start(): void {
    this.running = true;
    for (let i = 0; i < (this.opts.workers ?? 2); i++) this.loops.push(this.loop());
  }

  async stop(): Promise<void> {
    this.running = false;
    await Promise.all(this.loops);
    this.loops = [];
  }

  failures(from = 0, to = Infinity): RequestRecord[] {
    return this.between(from, to).filter((r) => !r.ok);
  }

  /** Requests that started within [from, to). */
  between(from: number, to: number): RequestRecord[] {
    return this.records.filter((r) => r.startMs >= from && r.startMs < to);
  }

  /** The stretches of failures among the requests that started within [from, to). */
  outages(from = 0, to = Infinity): Outage[] {
    const out: Outage[] = [];
    let open: Outage | undefined;
    for (const r of [...this.between(from, to)].sort((a, b) => a.startMs - b.startMs)) {
      if (!r.ok) {
        open ??= { fromMs: r.startMs, toMs: r.endMs, failed: 0 };
        open.failed++;
        open.toMs = Math.max(open.toMs, r.endMs);
      } else if (open) {
        open.toMs = r.endMs;
        out.push(open);
        open = undefined;
      }
    }
    if (open) out.push(open);
    return out;
  }

  private async loop(): Promise<void> {
    while (this.running) {
      const rec = await this.once();
      this.records.push(rec);
      if (!rec.ok && this.opts.pauseAfterFailureMs) await new Promise((r) => setTimeout(r, this.opts.pauseAfterFailureMs));
    }
  }

  private async once(): Promise<RequestRecord> {
    const startMs = this.now();
    try {
      const res = await fetch(`${this.url}/env`, { signal: AbortSignal.timeout(this.opts.timeoutMs ?? 10_000) });
      const body = await res.text();
      const replica = /^STANDIN_NAME=(.*)$/m.exec(body)?.[1];
      return { startMs, endMs: this.now(), ok: res.status === 200, status: res.status, replica };
    } catch (err) {
      const e = err as { name?: string; cause?: { code?: string }; message?: string };
      const error = e.name === 'TimeoutError' ? 'timeout' : (e.cause?.code ?? e.message ?? String(err));
      return { startMs, endMs: this.now(), ok: false, error };
    }
  }
}
