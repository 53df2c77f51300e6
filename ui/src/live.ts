import type { Api } from './api';
import { pollInterval, SseParser } from './logic/sse';

export type LiveState = 'connecting' | 'live' | 'polling';

/**
 * Keeps the dashboard current: the server's event stream (read with fetch, so the bearer token
 * goes in a header) says when something changed; while the stream is down, or this instance does
 * not lead, the page is read again every 5 s instead.
 */
export class Live {
  private abort?: AbortController;
  private pollTimer?: number;
  private retryTimer?: number;
  private connected = false;
  private leader = true;
  private stopped = false;
  private retryMs = 5000;

  constructor(
    private readonly api: Api,
    private readonly onChange: (topics: string[]) => void,
    private readonly onState: (s: LiveState) => void,
  ) {}

  start(): void {
    this.stopped = false;
    void this.connect();
  }

  stop(): void {
    this.stopped = true;
    this.abort?.abort();
    window.clearInterval(this.pollTimer);
    window.clearTimeout(this.retryTimer);
  }

  private async connect(): Promise<void> {
    this.abort = new AbortController();
    this.onState('connecting');
    try {
      const res = await this.api.raw('GET', '/api/v1/admin/events', undefined, { Accept: 'text/event-stream' }, this.abort.signal);
      if (!res.body) throw new Error('no stream');
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      const parser = new SseParser();
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        for (const ev of parser.push(value)) this.handle(ev.event, ev.data);
        if (parser.retryMs !== undefined) this.retryMs = parser.retryMs;
      }
    } catch {
      // Down, refused or aborted: poll until the stream is back.
    }
    const was = this.connected;
    this.connected = false;
    if (this.stopped) return;
    this.schedule();
    // What changed while the stream was going away was never nudged: read once now.
    if (was) this.onChange(['reconnect']);
    this.retryTimer = window.setTimeout(() => void this.connect(), this.retryMs);
  }

  private handle(event: string, data: string): void {
    let body: Record<string, unknown> = {};
    try {
      body = JSON.parse(data) as Record<string, unknown>;
    } catch {
      return;
    }
    if (event === 'hello') {
      this.connected = true;
      this.leader = body.leader !== false;
      this.schedule();
    } else if (event === 'change' && Array.isArray(body.topics)) {
      this.onChange(body.topics.map(String));
    }
  }

  private schedule(): void {
    window.clearInterval(this.pollTimer);
    const every = pollInterval({ connected: this.connected, leader: this.leader });
    this.onState(every === null ? 'live' : 'polling');
    if (every !== null) this.pollTimer = window.setInterval(() => this.onChange(['poll']), every);
  }
}
