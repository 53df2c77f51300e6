import { SafeEmitter } from '../events';
import { readLeader, SYNC_LEADER_LOCK } from './leader';
import type { SyncEvents } from './sync-events';
import type { Query } from './sync-store';
import { Syncer, syncerOptions, type SyncerOptions, type SyncOutcome, type SyncPreview } from './syncer';

export interface RenderOnceDeps extends Pick<SyncerOptions, 'pool' | 'loadState' | 'log' | 'secrets' | 'reload' | 'digest'> {
  settings: Parameters<typeof syncerOptions>[0];
}

export type RenderOnceResult = { dryRun: true; preview: SyncPreview } | { dryRun: false; outcome: SyncOutcome };

/** Thrown by `keyplane render` when a serving instance leads: two writers must never race. */
export class LeaderBusyError extends Error {
  constructor(leader: string | null) {
    super(`instance ${leader ?? '(unknown)'} leads and renders; ask it with POST /api/v1/admin/sync, or use --dry-run`);
    this.name = 'LeaderBusyError';
  }
}

/**
 * `keyplane render [--dry-run]`: with dry run, what would be written (masked) and the diff; else
 * one render, as the leader would do it, while holding the leader lock (refused when an instance
 * already leads).
 */
export async function renderOnce(deps: RenderOnceDeps, opts: { dryRun: boolean }): Promise<RenderOnceResult> {
  const make = (leaderQuery?: Query): Syncer =>
    new Syncer(
      syncerOptions(deps.settings, {
        pool: deps.pool,
        loadState: deps.loadState,
        log: deps.log,
        secrets: deps.secrets,
        events: new SafeEmitter<SyncEvents>(),
        reload: deps.reload,
        digest: deps.digest,
        leaderQuery,
      }),
    );
  // A dry run touches nothing on disk, not even a missing output directory.
  if (opts.dryRun) {
    const syncer = make();
    try {
      return { dryRun: true, preview: await syncer.preview() };
    } finally {
      await syncer.stop();
    }
  }
  const conn = await deps.pool.connect();
  try {
    const { rows } = await conn.query<{ ok: boolean }>('SELECT pg_try_advisory_lock($1) AS ok', [SYNC_LEADER_LOCK]);
    if (!rows[0]?.ok) throw new LeaderBusyError((await readLeader(deps.pool)).instance);
    // The revision is recorded on the session that holds the lock, as a serving leader does it.
    const syncer = make((text, values) => conn.query(text, values));
    try {
      await syncer.prepare();
      return { dryRun: false, outcome: await syncer.request('cli') };
    } finally {
      await syncer.stop();
      await conn.query('SELECT pg_advisory_unlock($1)', [SYNC_LEADER_LOCK]);
    }
  } finally {
    conn.release();
  }
}
