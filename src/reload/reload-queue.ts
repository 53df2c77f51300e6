import client from 'prom-client';
import type { ReloadKind } from '../config';
import type { Pool } from '../db/pool';
import { withRetry, withTransaction } from '../db/pool';
import type { SafeEmitter } from '../events';
import type { Logger, SecretRegistry } from '../log';
import type { Alerter } from '../alerts/alerter';
import { FileRollback } from './file-rollback';
import { maskSecrets } from './mask';
import type { Reloader, ReloadRequest, ReloadResult, ReloadStatus, TargetResult } from './reloader';
import type { RolloutProgress, TargetPhase } from './rollout';

export interface ReloadEvents {
  'reload:started': { revision: number; attempt: number };
  /** A try failed and another follows after `delayMs`. */
  'reload:retry': { revision: number; attempt: number; delayMs: number; error: string };
  /** The reload ended `ok` or `skipped`. */
  'reload:done': { revision: number; attempts: number; result: ReloadResult };
  /** The last try failed (or a newer revision superseded this one: then no alert is sent). */
  'reload:failed': { revision: number; attempts: number; result: ReloadResult; superseded: boolean };
  /** A target of the running reload moved on (see TargetPhase). */
  'reload:phase': { revision: number; target: string; phase: TargetPhase; outageMs?: number };
}

export interface ReloadQueueOptions {
  reloader: Reloader;
  pool: Pool;
  log: Logger;
  alerter: Alerter;
  emitter?: SafeEmitter<ReloadEvents>;
  secrets?: SecretRegistry;
  /** Tries per revision (3). */
  attempts?: number;
  /** First pause before a retry; doubles each time, with jitter (1 s). */
  backoffMs?: number;
  /** How many runs the table keeps (1,000). */
  keepRuns?: number;
  /**
   * Whether this instance leads. One that lost the lead starts no further try: the new leader
   * reloads, from the wish in the database. Default: always.
   */
  isLeader?: () => boolean;
  /** Where `keyplane_reload_outage_seconds` is registered. */
  registry?: client.Registry;
}

/**
 * The durable wish a request satisfies (sync_state.reload_wanted): when a reload of it finishes,
 * `reload_done` rises to its generation. `resumed`: handed over again because an earlier reload of
 * it never finished; dropped when that generation already runs or waits here.
 */
export interface ReloadWish {
  generation: number;
  resumed?: boolean;
}

/** One run (one try) as GET /api/v1/admin/sync shows it. */
export interface ReloadRunView {
  id: number;
  revision: number;
  reloader: ReloadKind;
  attempt: number;
  status: ReloadStatus;
  started_at: string;
  finished_at: string;
  error: string | null;
  targets: Array<{ target: string; status: ReloadStatus; started_at: string; finished_at: string; error: string | null; outage_ms: number | null }>;
}

/** A target of the reload in progress. */
export interface RunningTargetView {
  target: string;
  phase: TargetPhase;
  since: string;
  outage_ms: number | null;
}

export interface ReloadQueueStatus {
  reloader: ReloadKind;
  /** The reload in progress on this instance, if any. */
  running: { revision: number; attempt: number; since: string; targets: RunningTargetView[] } | null;
  /** The newest revision waiting for the running one to finish. */
  pending: { revision: number } | null;
  last: ReloadRunView | null;
}

/**
 * Runs reloads one at a time. The syncer calls `submit` after every revision that changed a file; a
 * revision that arrives while a reload runs waits, and only the newest waiting one runs next. A
 * failed try is retried with backoff; every try is recorded per target; a final failure is logged
 * as an ERROR and alerted (and the wish stays open in the database, so the syncer hands the files
 * over again on its next reconcile). A reload that finishes marks its wish done.
 */
export class ReloadQueue {
  private readonly log: Logger;
  private readonly attempts: number;
  private readonly backoffMs: number;
  private pending: { req: ReloadRequest; wish?: ReloadWish } | undefined;
  /** The wish of the request being reloaded (through its retries and pauses). */
  private current: ReloadWish | undefined;
  private running: { revision: number; attempt: number; since: Date; targets: RunningTargetView[] } | undefined;
  private readonly outage: client.Histogram<'target'> | undefined;
  private loop: Promise<void> | undefined;
  private wake: (() => void) | undefined;
  private stopped = false;

  constructor(private readonly opts: ReloadQueueOptions) {
    this.log = opts.log.child({ component: 'reload' });
    this.attempts = opts.attempts ?? 3;
    this.backoffMs = opts.backoffMs ?? 1_000;
    this.outage = opts.registry
      ? new client.Histogram({
          name: 'keyplane_reload_outage_seconds',
          help: 'How long a reloaded target did not serve: from its stop (or reload command) until it was ready again',
          labelNames: ['target'],
          buckets: [0.5, 1, 2, 5, 10, 15, 20, 30, 60, 120],
          registers: [opts.registry],
        })
      : undefined;
  }

  get kind(): ReloadKind {
    return this.opts.reloader.kind;
  }

  /**
   * Queues a reload of `req`; never throws. The latest submission wins over one still waiting: it
   * describes the files now on disk (its revision number may even be 0 when the syncer could not
   * record one).
   */
  submit(req: ReloadRequest, wish?: ReloadWish): void {
    if (this.stopped) return;
    if (wish?.resumed && [this.current, this.pending?.wish].some((w) => w !== undefined && w.generation >= wish.generation)) {
      this.log.debug('a reload of this wish already runs or waits', { generation: wish.generation, revision: req.revision });
      return;
    }
    if (this.pending) this.log.debug('coalescing reloads', { dropped: this.pending.req.revision, revision: req.revision });
    this.pending = { req, wish };
    this.wake?.();
    this.loop ??= this.drain();
  }

  /** Resolves once nothing runs or waits. */
  async whenIdle(): Promise<void> {
    while (this.loop) await this.loop;
  }

  /** Drops what waits, cuts a backoff short, and waits for a try in progress to finish (a half-done rollout is worse than a slow stop). */
  async stop(): Promise<void> {
    this.stopped = true;
    this.pending = undefined;
    this.wake?.();
    await this.whenIdle();
    await this.opts.reloader.stop?.();
  }

  async status(): Promise<ReloadQueueStatus> {
    return {
      reloader: this.kind,
      running: this.running
        ? { revision: this.running.revision, attempt: this.running.attempt, since: this.running.since.toISOString(), targets: this.running.targets.map((t) => ({ ...t })) }
        : null,
      pending: this.pending ? { revision: this.pending.req.revision } : null,
      last: await this.lastRun(),
    };
  }

  private async drain(): Promise<void> {
    // Yield once, so that submit() has stored this promise before it can finish.
    await Promise.resolve();
    try {
      while (this.pending && !this.stopped) {
        const { req, wish } = this.pending;
        this.pending = undefined;
        if (!this.leads()) {
          this.log.info('not reloading: this instance no longer leads; the new leader reloads', { revision: req.revision });
          continue;
        }
        this.current = wish;
        try {
          await this.runWithRetries(req, wish);
        } finally {
          this.current = undefined;
        }
      }
    } finally {
      // In the same step as the last look at `pending`: a submit() from here on starts a new drain,
      // one from before was seen by the loop.
      this.loop = undefined;
    }
  }

  private async runWithRetries(req: ReloadRequest, wish: ReloadWish | undefined): Promise<void> {
    const superseded = (): boolean => this.pending !== undefined || this.stopped || !this.leads();
    const files = new FileRollback(req, superseded, this.log);
    for (let attempt = 1; ; attempt++) {
      if (attempt > 1) {
        try {
          await files.reapply();
        } catch (err) {
          this.log.warn('could not re-apply the files before a retry', { revision: req.revision, err });
        }
      }
      const result = await this.attempt(files.request, attempt);
      if (result.status !== 'failed') {
        // `skipped` is done too: `none` leaves reloading to others, and Docker says `skipped` only when
        // every container is stopped and was given the new files or env for its next start.
        if (wish) await this.markDone(wish.generation);
        this.opts.emitter?.emit('reload:done', { revision: req.revision, attempts: attempt, result });
        return;
      }
      if (superseded()) {
        this.log.warn('reload failed; a newer revision replaces it', { revision: req.revision, attempt, error: result.error });
        this.opts.emitter?.emit('reload:failed', { revision: req.revision, attempts: attempt, result, superseded: true });
        return;
      }
      if (attempt >= this.attempts) {
        this.log.error('reload failed; LiteLLM may still serve the previous keys', {
          revision: req.revision,
          reloader: this.kind,
          attempts: attempt,
          error: result.error,
        });
        await this.alert(req.revision, attempt, result);
        this.opts.emitter?.emit('reload:failed', { revision: req.revision, attempts: attempt, result, superseded: false });
        return;
      }
      const delayMs = Math.round(this.backoffMs * 2 ** (attempt - 1) * (0.5 + Math.random() / 2));
      this.log.warn('reload failed; retrying', { revision: req.revision, attempt, delayMs, error: result.error });
      this.opts.emitter?.emit('reload:retry', { revision: req.revision, attempt, delayMs, error: result.error ?? 'failed' });
      await this.pause(delayMs);
      if (superseded()) {
        this.opts.emitter?.emit('reload:failed', { revision: req.revision, attempts: attempt, result, superseded: true });
        return;
      }
    }
  }

  /** One try: never throws; what it returns (and records) is masked. */
  private async attempt(req: ReloadRequest, attempt: number): Promise<ReloadResult> {
    const startedAt = new Date();
    const running = { revision: req.revision, attempt, since: startedAt, targets: [] as RunningTargetView[] };
    this.running = running;
    this.opts.emitter?.emit('reload:started', { revision: req.revision, attempt });
    let result: ReloadResult;
    try {
      result = await this.opts.reloader.reload({ ...req, progress: this.progressOf(running) });
    } catch (err) {
      const error = `reloader ${this.kind} threw: ${(err as Error).message ?? String(err)}`;
      result = { status: 'failed', error, targets: [] };
    } finally {
      this.running = undefined;
    }
    const finishedAt = new Date();
    const mask = (s: string | undefined): string | undefined => (s === undefined ? undefined : maskSecrets(s, req.env, this.opts.secrets));
    const masked: ReloadResult = {
      status: result.status,
      error: mask(result.error),
      targets: result.targets.length
        ? result.targets.map((t) => ({ ...t, error: mask(t.error) }))
        : [{ target: this.kind, status: result.status, startedAt, finishedAt, error: mask(result.error) }],
    };
    for (const t of masked.targets) if (t.outageMs !== undefined) this.outage?.observe({ target: t.target }, t.outageMs / 1000);
    try {
      await this.record(req.revision, attempt, startedAt, finishedAt, masked);
    } catch (err) {
      this.log.warn('could not record the reload run', { revision: req.revision, err });
    }
    return masked;
  }

  /** Keeps the running reload's per-target phases for the sync status, and tells listeners. */
  private progressOf(running: { revision: number; targets: RunningTargetView[] }): RolloutProgress {
    return {
      plan: (targets) => {
        const now = new Date().toISOString();
        running.targets = targets.map((target) => ({ target, phase: 'pending', since: now, outage_ms: null }));
      },
      phase: (target, phase, detail) => {
        let t = running.targets.find((x) => x.target === target);
        if (!t) running.targets.push((t = { target, phase, since: '', outage_ms: null }));
        t.phase = phase;
        t.since = new Date().toISOString();
        if (detail?.outageMs !== undefined) t.outage_ms = detail.outageMs;
        this.opts.emitter?.emit('reload:phase', { revision: running.revision, target, phase, outageMs: detail?.outageMs });
      },
    };
  }

  private leads(): boolean {
    return this.opts.isLeader ? this.opts.isLeader() : true;
  }

  private async markDone(generation: number): Promise<void> {
    try {
      await withRetry(() => this.opts.pool.query('UPDATE sync_state SET reload_done = greatest(reload_done, $1), updated_at = now() WHERE id = 1', [generation]));
    } catch (err) {
      // The wish stays open: the next start or reconcile reloads once more, which is harmless.
      this.log.warn('could not record that the reload finished', { generation, err });
    }
  }

  private async record(revision: number, attempt: number, startedAt: Date, finishedAt: Date, r: ReloadResult): Promise<void> {
    await withTransaction(this.opts.pool, async (c) => {
      const { rows } = await c.query<{ id: number }>(
        `INSERT INTO reload_runs (revision, reloader, attempt, started_at, finished_at, status, error)
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id`,
        [revision, this.kind, attempt, startedAt, finishedAt, r.status, r.error ?? null],
      );
      const id = rows[0]!.id;
      await c.query(
        `INSERT INTO reload_run_targets (run_id, position, target, started_at, finished_at, status, error, outage_ms)
         SELECT $1, t.ord::int - 1, t.target, t.started_at, t.finished_at, t.status, t.error, t.outage_ms
         FROM unnest($2::text[], $3::timestamptz[], $4::timestamptz[], $5::text[], $6::text[], $7::int[])
           WITH ORDINALITY AS t(target, started_at, finished_at, status, error, outage_ms, ord)`,
        [
          id,
          r.targets.map((t) => t.target),
          r.targets.map((t) => t.startedAt),
          r.targets.map((t) => t.finishedAt),
          r.targets.map((t) => t.status),
          r.targets.map((t) => t.error ?? null),
          r.targets.map((t) => (t.outageMs === undefined ? null : Math.round(t.outageMs))),
        ],
      );
      await c.query('DELETE FROM reload_runs WHERE id <= $1', [id - (this.opts.keepRuns ?? 1_000)]);
    });
  }

  private async lastRun(): Promise<ReloadRunView | null> {
    return withRetry(async () => {
      const run = await this.opts.pool.query<{
        id: number; revision: number; reloader: ReloadKind; attempt: number; status: ReloadStatus; started_at: Date; finished_at: Date; error: string | null;
      }>('SELECT id, revision, reloader, attempt, status, started_at, finished_at, error FROM reload_runs ORDER BY id DESC LIMIT 1');
      const r = run.rows[0];
      if (!r) return null;
      const targets = await this.opts.pool.query<{ target: string; status: ReloadStatus; started_at: Date; finished_at: Date; error: string | null; outage_ms: number | null }>(
        'SELECT target, status, started_at, finished_at, error, outage_ms FROM reload_run_targets WHERE run_id = $1 ORDER BY position',
        [r.id],
      );
      return {
        id: r.id,
        revision: r.revision,
        reloader: r.reloader,
        attempt: r.attempt,
        status: r.status,
        started_at: r.started_at.toISOString(),
        finished_at: r.finished_at.toISOString(),
        error: r.error,
        targets: targets.rows.map((t) => ({
          target: t.target,
          status: t.status,
          started_at: t.started_at.toISOString(),
          finished_at: t.finished_at.toISOString(),
          error: t.error,
          outage_ms: t.outage_ms,
        })),
      };
    });
  }

  private async alert(revision: number, attempts: number, result: ReloadResult): Promise<void> {
    const targets = result.targets.map((t: TargetResult) => ({ target: t.target, status: t.status, error: t.error ?? null }));
    try {
      await this.opts.alerter.send({ type: 'reload.failed', revision, reloader: this.kind, attempts, error: result.error ?? null, targets });
    } catch (err) {
      this.log.warn('could not send the reload alert', { revision, err });
    }
  }

  /** A backoff that a newer revision or stop() cuts short. */
  private pause(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.wake = undefined;
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.wake = done;
    });
  }
}
