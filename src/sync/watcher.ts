import createSubscriber, { type Subscriber } from 'pg-listen';
import type { SafeEmitter } from '../events';
import type { Logger } from '../log';
import { backoffDelay, type Backoff } from './backoff';
import type { SyncEvents } from './sync-events';

export const SYNC_CHANNEL = 'keyplane_changed';

export type NudgeReason = 'notify' | 'reconnect';

export const FORCE_RELOAD_OP = 'sync-reload';

export interface WatcherOptions {
  connectionString: string;
  /** Shown in pg_stat_activity; tests find and kill the LISTEN session by it. */
  applicationName: string;
  log: Logger;
  events: SafeEmitter<SyncEvents>;
  onNudge: (reason: NudgeReason) => void;
  /** A forwarded request to render and hand the files to reload even if unchanged. */
  onForceReload?: () => void;
  backoff?: Backoff;
  /** How long pg-listen retries one lost connection before this watcher starts a fresh one. */
  reconnectWindowMs?: number;
  /** Interval of the trivial query that finds a half-open connection. */
  paranoidMs?: number;
}

function field(payload: unknown, name: string): string {
  const v = payload && typeof payload === 'object' ? (payload as Record<string, unknown>)[name] : undefined;
  return typeof v === 'string' ? v.slice(0, 200) : '?';
}

/**
 * Holds a dedicated LISTEN connection. A notification is only a nudge; after every reconnect the
 * owner is nudged with `reconnect` so that it re-reads everything, since notifications sent while
 * the connection was away are lost.
 */
export class Watcher {
  private sub: Subscriber | undefined;
  private stopped = true;
  private everConnected = false;
  private attempt = 0;
  private retryTimer: ReturnType<typeof setTimeout> | undefined;
  private readonly backoff: Backoff;

  constructor(private readonly opts: WatcherOptions) {
    this.backoff = opts.backoff ?? { baseMs: 100, maxMs: 10_000 };
  }

  /** Connects and LISTENs; rejects when the first connection fails (start-up then stops). */
  async start(): Promise<void> {
    if (!this.stopped) return;
    this.stopped = false;
    await this.open();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    const sub = this.sub;
    this.sub = undefined;
    await sub?.close().catch(() => undefined);
  }

  private async open(): Promise<void> {
    const sub = createSubscriber(
      { connectionString: this.opts.connectionString, application_name: this.opts.applicationName },
      {
        retryInterval: (attempt) => backoffDelay(attempt, this.backoff),
        retryTimeout: this.opts.reconnectWindowMs ?? 10_000,
        paranoidChecking: this.opts.paranoidMs ?? 10_000,
        // A payload is never trusted; one that is not JSON still nudges.
        parse: (text: string) => {
          try {
            return JSON.parse(text) as unknown;
          } catch {
            return {};
          }
        },
      },
    );
    this.sub = sub;
    let listening = false;
    sub.notifications.on(SYNC_CHANNEL, (payload: unknown) => {
      const table = field(payload, 'table');
      const op = field(payload, 'op');
      this.opts.events.emit('watcher:notification', { table, op, id: field(payload, 'id') });
      // A follower's POST /sync {"force_reload": true}, forwarded through the database.
      if (table === 'manual' && op === FORCE_RELOAD_OP && this.opts.onForceReload) this.opts.onForceReload();
      else this.opts.onNudge('notify');
    });
    sub.events.on('reconnect', (attempt) => {
      if (attempt === 1) this.opts.log.warn('LISTEN connection lost; reconnecting');
      this.opts.events.emit('watcher:disconnected', { attempt });
    });
    sub.events.on('connected', () => {
      // pg-listen's reconnect loop ignores close(); a connection it made after stop() is closed here.
      if (sub !== this.sub || this.stopped) {
        void sub.close().catch(() => undefined);
        return;
      }
      // pg-listen says `connected` after it re-LISTENed; the first connect is announced by open().
      if (listening) this.connected();
    });
    sub.events.on('error', (err) => {
      if (sub !== this.sub || this.stopped) return;
      this.opts.log.warn('LISTEN connection gave up reconnecting; starting a fresh one', { err: err.message });
      this.sub = undefined;
      void sub.close().catch(() => undefined);
      this.scheduleRetry();
    });
    try {
      await sub.connect();
      await sub.listenTo(SYNC_CHANNEL);
      listening = true;
    } catch (err) {
      this.sub = undefined;
      await sub.close().catch(() => undefined);
      if (!this.everConnected) {
        this.stopped = true;
        throw err;
      }
      this.opts.log.warn('LISTEN connection failed; retrying', { err: (err as Error).message });
      this.scheduleRetry();
      return;
    }
    if (this.stopped) {
      await sub.close().catch(() => undefined);
      return;
    }
    if (this.everConnected) this.connected();
    else {
      this.everConnected = true;
      this.opts.events.emit('watcher:connected', { reconnect: false });
    }
  }

  private connected(): void {
    this.attempt = 0;
    this.opts.log.info('LISTEN connection restored; resyncing');
    this.opts.events.emit('watcher:connected', { reconnect: true });
    this.opts.onNudge('reconnect');
  }

  private scheduleRetry(): void {
    if (this.stopped) return;
    const delay = backoffDelay(this.attempt++, this.backoff);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      if (!this.stopped) void this.open();
    }, delay);
  }
}
