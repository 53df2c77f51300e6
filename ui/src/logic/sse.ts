/** A server-sent events parser for a stream read with fetch (EventSource cannot send the Authorization header). */

export interface SseEvent {
  event: string;
  data: string;
}

/**
 * Fed the stream's text in whatever chunks it arrives; returns the events each chunk completes.
 * Follows the WHATWG rules that matter here: lines end in LF, CRLF or CR; `:` starts a comment;
 * several `data:` lines join with LF; an event without data is not dispatched.
 */
export class SseParser {
  private buffer = '';
  private event = '';
  private data: string[] = [];
  /** The server's `retry:` in ms, when it sent one. */
  retryMs: number | undefined;

  push(chunk: string): SseEvent[] {
    this.buffer += chunk;
    const out: SseEvent[] = [];
    for (;;) {
      const m = /\r\n|\r|\n/.exec(this.buffer);
      // A lone CR at the end may be the first half of CRLF: wait for the next chunk.
      if (!m || (m[0] === '\r' && m.index === this.buffer.length - 1)) break;
      const line = this.buffer.slice(0, m.index);
      this.buffer = this.buffer.slice(m.index + m[0].length);
      const ev = this.line(line);
      if (ev) out.push(ev);
    }
    return out;
  }

  private line(line: string): SseEvent | undefined {
    if (line === '') {
      const ev = this.data.length ? { event: this.event || 'message', data: this.data.join('\n') } : undefined;
      this.event = '';
      this.data = [];
      return ev;
    }
    if (line.startsWith(':')) return undefined;
    const colon = line.indexOf(':');
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'event') this.event = value;
    else if (field === 'data') this.data.push(value);
    else if (field === 'retry' && /^\d+$/.test(value)) this.retryMs = Number(value);
    return undefined;
  }
}

/** How often the dashboard reads the overview again by itself. */
export const POLL_MS = 5000;

/**
 * Polling while the stream is down, or when this instance does not lead (renders, reloads and
 * probe rounds then happen elsewhere and send no nudge here); none while the leader's stream is up.
 */
export function pollInterval(s: { connected: boolean; leader: boolean }): number | null {
  return s.connected && s.leader ? null : POLL_MS;
}
