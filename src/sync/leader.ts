import pg from 'pg';
import type { SafeEmitter } from '../events';
import type { Pool } from '../db/pool';
import type { Logger } from '../log';
import { backoffDelay, type Backoff } from './backoff';
import type { SyncEvents } from './sync-events';

// Next to the migration (…0001) and audit (…0002) locks. A session-level lock: it lives exactly as
// long as the leader's dedicated connection, so Postgres frees it when that session dies.
export const SYNC_LEADER_LOCK = 0x6b70_0003;

export interface LeaderOptions {
  connectionString: string;
  instanceId: string;
  log: Logger;
  events: SafeEmitter<SyncEvents>;
  /** Shown in pg_stat_activity; tests kill the leader's session by it. */
  applicationName?: string;
  /** How often a follower tries the lock (jittered between half and the whole of it). */
  pollMs?: number;
  /** How often the leader proves its session is alive and still holds the lock. */
  checkMs?: number;
  /** How long the leader's session may take to answer before this instance steps down (5 s). */
  queryTimeoutMs?: number;
  backoff?: Backoff;
}

export interface LeaderInfo {
  instance: string | null;
  since: Date | null;
  /** Whether some session holds the lock right now (the row could outlive a crashed leader). */
  held: boolean;
}

/** Who leads, readable from any instance. */
export async function readLeader(pool: Pool): Promise<LeaderInfo> {
  const { rows } = await pool.query<{ leader_instance: string | null; leader_since: Date | null; held: boolean }>(
    `SELECT s.leader_instance, s.leader_since,
       EXISTS (SELECT 1 FROM pg_locks l
               WHERE l.locktype = 'advisory' AND l.granted AND l.classid = 0 AND l.objsubid = 1
                 AND l.objid = ${SYNC_LEADER_LOCK}::oid
                 AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())) AS held
     FROM sync_state s WHERE s.id = 1`,
  );
  const r = rows[0];
  return { instance: r?.held ? r.leader_instance : null, since: r?.held ? r.leader_since : null, held: r?.held ?? false };
}

export const leaderAppName = (instanceId: string): string => `keyplane-leader:${instanceId}`.slice(0, 63);

/** SQL: whether the session running it holds the leader lock. */
export const HOLDS_LEADER_LOCK = `EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted AND pid = pg_backend_pid()
  AND classid = 0 AND objid = ${SYNC_LEADER_LOCK}::oid AND objsubid = 1)`;

/** This instance does not lead (any more): whatever it was about to do as the leader must not happen. */
export class LostLeadError extends Error {
  constructor(reason: string) {
    super(`this instance lost the lead: ${reason}`);
    this.name = 'LostLeadError';
  }
}

/**
 * Leader election on a Postgres advisory lock held by a dedicated session. Several instances
 * share one database; exactly one holds the lock and renders. When the leader's session dies,
 * Postgres frees the lock and the next follower poll takes it.
 */
export class LeaderElector {
  private client: pg.Client | undefined;
  private leading = false;
  private stopped = true;
  private timer: ReturnType<typeof setTimeout> | undefined;
  private failures = 0;
  private readonly pollMs: number;
  private readonly checkMs: number;
  private readonly queryTimeoutMs: number;
  private readonly backoff: Backoff;

  constructor(private readonly opts: LeaderOptions) {
    this.pollMs = opts.pollMs ?? 1000;
    this.checkMs = opts.checkMs ?? 2000;
    this.queryTimeoutMs = opts.queryTimeoutMs ?? 5000;
    this.backoff = opts.backoff ?? { baseMs: 100, maxMs: 10_000 };
  }

  get isLeader(): boolean {
    return this.leading;
  }

  get instanceId(): string {
    return this.opts.instanceId;
  }

  /** Makes the first attempt (so a lone instance leads when this resolves), then keeps trying. */
  async start(): Promise<void> {
    if (!this.stopped) return;
    this.stopped = false;
    await this.tick();
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    const client = this.client;
    this.client = undefined;
    if (client) {
      if (this.leading) {
        // Timed, so that a session that hangs cannot hold up the stop (end() then cuts it).
        await this.timed(client, client.query('UPDATE sync_state SET leader_instance = NULL, leader_since = NULL, updated_at = now() WHERE id = 1 AND leader_instance = $1', [this.opts.instanceId])).catch(() => undefined);
        await this.timed(client, client.query('SELECT pg_advisory_unlock($1)', [SYNC_LEADER_LOCK])).catch(() => undefined);
      }
      await client.end().catch(() => undefined);
    }
    this.demote('stopped');
  }

  private schedule(ms: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.tick();
    }, ms);
  }

  /**
   * Runs `statement` on the leader's own session (a fence: only the session that holds the lock can
   * answer as the leader), within the query timeout. Throws LostLeadError when this instance does not
   * lead, or its session fails or does not answer in time (it then steps down).
   */
  async query<R extends pg.QueryResultRow>(text: string, values: unknown[]): Promise<pg.QueryResult<R>> {
    const client = this.client;
    if (!this.leading || !client) throw new LostLeadError('not the leader');
    try {
      return await this.timed(client, client.query<R>(text, values));
    } catch (err) {
      if (err instanceof LostLeadError) throw err;
      if (client !== this.client) throw new LostLeadError((err as Error).message);
      throw err;
    }
  }

  /** `work` on `client`, or a LostLeadError (and a step down) when it takes longer than the query timeout. */
  private timed<T>(client: pg.Client, work: Promise<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        const reason = `the leader's database session did not answer within ${this.queryTimeoutMs} ms`;
        this.lost(client, reason);
        reject(new LostLeadError(reason));
      }, this.queryTimeoutMs);
      work.then(
        (v) => {
          clearTimeout(timer);
          resolve(v);
        },
        (err: unknown) => {
          clearTimeout(timer);
          reject(err);
        },
      );
    });
  }

  private async tick(): Promise<void> {
    if (this.stopped) return;
    let client = this.client;
    try {
      client ??= await this.connect();
      if (this.leading) {
        // Not only alive: still the holder. A session that hangs (a dead network path, a stalled
        // server) must not leave this instance rendering while another takes the lock.
        const { rows } = await this.timed(client, client.query<{ held: boolean }>(`SELECT ${HOLDS_LEADER_LOCK} AS held`));
        if (!rows[0]?.held) throw new Error('the leader lock is no longer held by this session');
      } else {
        const { rows } = await this.timed(client, client.query<{ ok: boolean }>('SELECT pg_try_advisory_lock($1) AS ok', [SYNC_LEADER_LOCK]));
        if (rows[0]?.ok && !this.stopped && client === this.client) await this.promote(client);
      }
      this.failures = 0;
      this.schedule(this.leading ? this.checkMs : this.pollMs * (0.5 + Math.random() / 2));
    } catch (err) {
      this.lost(client, (err as Error).message);
    }
  }

  private async connect(): Promise<pg.Client> {
    const client = new pg.Client({
      connectionString: this.opts.connectionString,
      application_name: this.opts.applicationName ?? leaderAppName(this.opts.instanceId),
      keepAlive: true,
      keepAliveInitialDelayMillis: 10_000,
      connectionTimeoutMillis: this.queryTimeoutMs,
      // If the leader's host vanishes without closing the socket, the server ends the session (and frees
      // the lock) in about 25 s instead of the operating system's default of two hours.
      options: '-c tcp_keepalives_idle=10 -c tcp_keepalives_interval=5 -c tcp_keepalives_count=3',
    });
    client.on('error', (err) => this.lost(client, err.message));
    client.on('end', () => this.lost(client, 'connection ended'));
    await client.connect();
    if (this.stopped) {
      // Stopped while this connection was being made: nothing may outlive stop().
      await client.end().catch(() => undefined);
      throw new Error('stopped');
    }
    this.client = client;
    return client;
  }

  private async promote(client: pg.Client): Promise<void> {
    await this.timed(client, client.query('UPDATE sync_state SET leader_instance = $1, leader_since = now(), updated_at = now() WHERE id = 1', [this.opts.instanceId]));
    if (this.stopped || client !== this.client) return;
    this.leading = true;
    this.opts.log.info('this instance now leads: it renders and reloads', { instance: this.opts.instanceId });
    this.opts.events.emit('leader:acquired', { instance: this.opts.instanceId });
  }

  private demote(reason: string): void {
    if (!this.leading) return;
    this.leading = false;
    if (reason !== 'stopped') this.opts.log.warn('this instance lost the lead; another instance takes over', { reason });
    this.opts.events.emit('leader:lost', { instance: this.opts.instanceId, reason });
  }

  /** The session is gone (or never came): step down at once, then retry after a pause. */
  private lost(client: pg.Client | undefined, reason: string): void {
    if (this.stopped || (client && client !== this.client)) return;
    const wasLeading = this.leading;
    if (this.client) {
      const dead = this.client;
      this.client = undefined;
      void dead.end().catch(() => undefined);
    }
    this.demote(reason);
    if (this.timer) clearTimeout(this.timer);
    // A leader that lost its session waits two follower polls first, so a healthy follower wins the lock.
    const pause = backoffDelay(this.failures++, this.backoff) + (wasLeading ? 2 * this.pollMs : 0);
    if (!wasLeading && this.failures === 1) this.opts.log.warn('leader election connection failed; retrying', { reason });
    this.schedule(pause);
  }
}
