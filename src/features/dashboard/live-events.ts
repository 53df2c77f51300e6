import type { Request, Response } from 'express';
import type { SafeEmitter } from '../../events';
import { ServiceUnavailable } from '../../http/errors';
import type { ReloadEvents } from '../../reload/reload-queue';
import type { HealthEvents } from '../../health/prober';
import type { KeyProbeEvents } from '../../health/key-prober';
import type { RotationEvents } from '../key-pools/rotation-worker';
import type { SyncEvents } from '../../sync/sync-events';

/** What changed, as far as a dashboard needs to know to read it again. A nudge carries no data. */
export type LiveTopic = 'sync' | 'reload' | 'health' | 'keys' | 'config';

type Events = SyncEvents & ReloadEvents & HealthEvents & KeyProbeEvents & RotationEvents;

export interface LiveEventsDeps {
  events: SafeEmitter<Events>;
  /** Renders, reloads and health rounds happen on the leader only: a client of a follower polls as well. */
  isLeader: () => boolean;
  /** A comment line this often keeps proxies from closing an idle stream (15 s). */
  heartbeatMs?: number;
  /**
   * A stream ends after this long (10 min) and the client opens a new one, authenticating again:
   * a revoked token stops getting nudges there.
   */
  maxAgeMs?: number;
  /** Nudges within this window are sent as one (200 ms): a bulk import is one message, not thousands. */
  coalesceMs?: number;
  /** Streams open at once on this instance (500); past it a client polls instead. */
  maxStreams?: number;
}

/** Rows whose change a dashboard shows, by the watcher's table names (sql/002_sync.sql, 005, 010). */
const TABLE_TOPICS: Record<string, LiveTopic> = {
  platform_keys: 'keys',
  platform_key_versions: 'keys',
  provider_keys: 'keys',
  providers: 'keys',
  models: 'config',
  routing: 'config',
  key_destinations: 'config',
};

// A client whose socket does not drain this much is too slow for nudges; it reconnects or polls.
const MAX_BUFFERED = 64 * 1024;

interface Stream {
  res: Response;
  pending: Set<LiveTopic>;
  flush?: NodeJS.Timeout;
  timers: NodeJS.Timeout[];
}

/**
 * `GET /api/v1/admin/events`: server-sent events that tell the dashboard when to read again,
 * after each render, reload, health round and key state change. Only topic names are sent, never
 * a value, so a stream shows nothing its reader could not read from the API.
 */
export class LiveEvents {
  private readonly streams = new Set<Stream>();
  private readonly offs: Array<() => void> = [];
  private stopped = false;
  private readonly heartbeatMs: number;
  private readonly maxAgeMs: number;
  private readonly coalesceMs: number;
  private readonly maxStreams: number;

  constructor(private readonly deps: LiveEventsDeps) {
    this.heartbeatMs = deps.heartbeatMs ?? 15_000;
    this.maxAgeMs = deps.maxAgeMs ?? 600_000;
    this.coalesceMs = deps.coalesceMs ?? 200;
    this.maxStreams = deps.maxStreams ?? 500;
    const e = deps.events;
    const on = (topic: LiveTopic) => () => this.nudge(topic);
    this.offs.push(
      e.on('render:done', on('sync')),
      e.on('render:failed', on('sync')),
      e.on('reload:started', on('reload')),
      e.on('reload:phase', on('reload')),
      e.on('reload:done', on('reload')),
      e.on('reload:failed', on('reload')),
      e.on('health:round-done', on('health')),
      e.on('key:recheck-done', on('keys')),
      e.on('rotation:step', on('keys')),
      e.on('watcher:notification', (n) => {
        const topic = TABLE_TOPICS[n.table];
        if (topic) this.nudge(topic);
      }),
      e.on('leader:acquired', () => this.hello()),
      e.on('leader:lost', () => this.hello()),
    );
  }

  /** Streams open now. */
  get size(): number {
    return this.streams.size;
  }

  /** Turns the response into a stream; returns at once (the stream lives on until the client leaves, it ages out, or stop()). */
  attach(req: Request, res: Response): void {
    if (this.stopped) throw new ServiceUnavailable('the server is stopping');
    if (this.streams.size >= this.maxStreams) throw new ServiceUnavailable(`${this.maxStreams} live streams are open on this instance; poll instead`);
    res.status(200);
    res.setHeader('Content-Type', 'text/event-stream; charset=utf-8');
    res.setHeader('Cache-Control', 'no-store');
    // nginx and the like would otherwise hold the nudges back in their buffers.
    res.setHeader('X-Accel-Buffering', 'no');
    res.flushHeaders();
    const s: Stream = { res, pending: new Set(), timers: [] };
    this.streams.add(s);
    s.timers.push(setInterval(() => this.write(s, ': ping\n\n'), this.heartbeatMs));
    s.timers.push(setTimeout(() => this.close(s), this.maxAgeMs));
    for (const t of s.timers) t.unref();
    req.on('close', () => this.close(s));
    this.write(s, `retry: 5000\n${this.helloFrame()}`);
  }

  /** Ends every stream and listens no more; idempotent. */
  stop(): void {
    this.stopped = true;
    for (const off of this.offs.splice(0)) off();
    for (const s of [...this.streams]) this.close(s);
  }

  private nudge(topic: LiveTopic): void {
    for (const s of this.streams) {
      s.pending.add(topic);
      if (s.flush) continue;
      s.flush = setTimeout(() => {
        s.flush = undefined;
        const topics = [...s.pending].sort();
        s.pending.clear();
        this.write(s, `event: change\ndata: ${JSON.stringify({ topics })}\n\n`);
      }, this.coalesceMs);
      s.flush.unref();
    }
  }

  private helloFrame(): string {
    return `event: hello\ndata: ${JSON.stringify({ leader: this.deps.isLeader() })}\n\n`;
  }

  private hello(): void {
    for (const s of this.streams) this.write(s, this.helloFrame());
  }

  private write(s: Stream, frame: string): void {
    if (s.res.writableEnded || s.res.destroyed) return this.close(s);
    if (s.res.writableLength > MAX_BUFFERED) return this.close(s);
    s.res.write(frame);
  }

  private close(s: Stream): void {
    if (!this.streams.delete(s)) return;
    for (const t of s.timers) clearTimeout(t);
    if (s.flush) clearTimeout(s.flush);
    if (!s.res.writableEnded) s.res.end();
  }
}
