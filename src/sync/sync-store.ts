import type pg from 'pg';
import { withRetry, type Pool, type PoolClient } from '../db/pool';
import { HOLDS_LEADER_LOCK, LostLeadError } from './leader';
import type { RenderFailure, RenderResult } from './sync-events';

/** Runs one statement; the leader's own session (a fence) or the pool. */
export type Query = <R extends pg.QueryResultRow>(text: string, values: unknown[]) => Promise<pg.QueryResult<R>>;

export interface RevisionView {
  revision: number;
  config_sha256: string;
  env_digest: string;
  changed_files: string[];
  trigger: string;
  changed_keys: string[];
  skipped: unknown[];
  instance_id: string;
  created_at: string;
}

export interface RevisionInput {
  configSha256: string;
  envDigest: string;
  changedFiles: string[];
  trigger: string;
  keys: unknown;
  skipped: unknown;
  instanceId: string;
  usesMasterKey: boolean;
}

/** The durable wish to reload: generations raised by renders, and the highest one a reload finished. */
export interface ReloadWishRow {
  wanted: number;
  done: number;
}

const REVISION_COLUMNS = 'revision, config_sha256, env_digest, changed_files, trigger, changed_keys, skipped, instance_id, created_at';

function revisionView(r: Record<string, unknown>): RevisionView {
  return {
    revision: Number(r.revision),
    config_sha256: String(r.config_sha256),
    env_digest: String(r.env_digest),
    changed_files: r.changed_files as string[],
    trigger: String(r.trigger),
    changed_keys: r.changed_keys as string[],
    skipped: r.skipped as unknown[],
    instance_id: String(r.instance_id),
    created_at: (r.created_at as Date).toISOString(),
  };
}

// With `fenced`, the statement changes nothing unless the session running it holds the leader lock.
const lease = (fenced: boolean): string => (fenced ? HOLDS_LEADER_LOCK : 'true');

// Raises the wish (and, once LiteLLM's config relies on a master key, auth_required) in one step.
const RAISE_WISH = (fenced: boolean, authParam: string): string =>
  `UPDATE sync_state SET reload_wanted = reload_wanted + 1, reload_wanted_at = now(), auth_required = auth_required OR ${authParam}, updated_at = now()
   WHERE id = 1 AND ${lease(fenced)} RETURNING reload_wanted`;

/**
 * Claims the one forced reload allowed per `intervalS` for the whole deployment, in the caller's
 * transaction. Returns 0 when claimed, else the seconds until the next one is allowed.
 */
export async function claimForcedReload(c: PoolClient, intervalS: number): Promise<number> {
  const { rows } = await c.query<{ claimed: boolean; wait_s: number }>(
    `WITH claim AS (
       UPDATE sync_state SET forced_reload_at = now()
       WHERE id = 1 AND (forced_reload_at IS NULL OR forced_reload_at <= now() - make_interval(secs => $1))
       RETURNING 1)
     SELECT EXISTS (SELECT 1 FROM claim) AS claimed,
       greatest(1, ceil(extract(epoch FROM forced_reload_at + make_interval(secs => $1) - now())))::int AS wait_s
     FROM sync_state WHERE id = 1`,
    [intervalS],
  );
  return rows[0]?.claimed ? 0 : (rows[0]?.wait_s ?? intervalS);
}

/** The SQL of the sync stage: revisions, the durable reload wish, the render status. */
export class SyncStore {
  constructor(private readonly pool: Pool) {}

  /**
   * Before the files are swapped, in one statement: records the revision (naming the keys that
   * changed since the previous one), raises the wish to reload, and marks auth as required when the
   * config relies on a master key. With `fenced`, `query` must run on the leader's session, and
   * nothing is recorded unless that session holds the lock (a LostLeadError then).
   */
  async recordRevision(query: Query, fenced: boolean, r: RevisionInput): Promise<{ revision: number; changedKeys: string[]; generation: number }> {
    const { rows } = await query<{ revision: number; changed_keys: string[]; generation: number }>(
      `WITH wish AS (${RAISE_WISH(fenced, '$8::boolean')}),
       prev AS (SELECT coalesce((SELECT keys FROM sync_revisions ORDER BY revision DESC LIMIT 1), '{}'::jsonb) AS keys),
       ins AS (
         INSERT INTO sync_revisions (config_sha256, env_digest, changed_files, trigger, changed_keys, keys, skipped, instance_id)
         SELECT $1, $2, $3, $4,
           ARRAY(SELECT k FROM (SELECT jsonb_object_keys($5::jsonb) AS k UNION SELECT jsonb_object_keys(prev.keys)) ks
                 WHERE ($5::jsonb -> k) IS DISTINCT FROM (prev.keys -> k) ORDER BY k),
           $5::jsonb, $6::jsonb, $7
         FROM prev, wish
         RETURNING revision, changed_keys)
       SELECT ins.revision, ins.changed_keys, wish.reload_wanted AS generation FROM ins, wish`,
      [r.configSha256, r.envDigest, r.changedFiles, r.trigger, JSON.stringify(r.keys), JSON.stringify(r.skipped), r.instanceId, r.usesMasterKey],
    );
    const row = rows[0];
    if (!row) throw new LostLeadError('the leader lock is not held by the session that records the revision');
    return { revision: row.revision, changedKeys: row.changed_keys, generation: row.generation };
  }

  /** Raises the wish to reload without a file change (litellm-api: the managed state changed). */
  async raiseWish(query: Query, fenced: boolean, usesMasterKey: boolean): Promise<number> {
    const { rows } = await query<{ reload_wanted: number }>(RAISE_WISH(fenced, '$1::boolean'), [usesMasterKey]);
    if (!rows[0]) throw new LostLeadError('the leader lock is not held by the session that raises the reload wish');
    return rows[0].reload_wanted;
  }

  /** The swap failed after the revision was recorded: forget it, and lower the wish it raised unless a newer one came since. */
  async dropRevision(revision: number, generation: number): Promise<void> {
    await withRetry(() =>
      this.pool.query(
        `WITH gone AS (DELETE FROM sync_revisions WHERE revision = $1)
         UPDATE sync_state SET reload_wanted = reload_wanted - 1, updated_at = now() WHERE id = 1 AND reload_wanted = $2`,
        [revision, generation],
      ),
    );
  }

  /** Records how the last render went; returns the reload wish as it stands. */
  async saveStatus(status: 'changed' | 'unchanged' | 'failed', trigger: string, failure: RenderFailure | null, result: RenderResult | undefined, usesMasterKey: boolean): Promise<ReloadWishRow | undefined> {
    const { rows } = await this.pool.query<{ reload_wanted: number; reload_done: number }>(
      `UPDATE sync_state SET last_attempt_at = now(), last_status = $1, last_trigger = $2, last_error = $3::jsonb,
         last_duration_ms = $4, skipped = coalesce($5::jsonb, skipped), warnings = coalesce($6::jsonb, warnings),
         auth_required = auth_required OR $7, updated_at = now()
       WHERE id = 1
       RETURNING reload_wanted, reload_done`,
      [
        status,
        trigger,
        failure ? JSON.stringify(failure) : null,
        result?.durationMs ?? null,
        result ? JSON.stringify(result.skipped) : null,
        result ? JSON.stringify(result.warnings) : null,
        usesMasterKey,
      ],
    );
    return rows[0] ? { wanted: rows[0].reload_wanted, done: rows[0].reload_done } : undefined;
  }

  async reloadWish(): Promise<ReloadWishRow> {
    const { rows } = await this.pool.query<{ reload_wanted: number; reload_done: number }>('SELECT reload_wanted, reload_done FROM sync_state WHERE id = 1');
    return { wanted: rows[0]?.reload_wanted ?? 0, done: rows[0]?.reload_done ?? 0 };
  }

  async statusRow(): Promise<Record<string, unknown>> {
    const { rows } = await this.pool.query(
      `SELECT last_attempt_at, last_status, last_trigger, last_error, last_duration_ms, skipped, warnings, reload_wanted, reload_done, reload_wanted_at
       FROM sync_state WHERE id = 1`,
    );
    return rows[0] ?? {};
  }

  async latestRevision(): Promise<RevisionView | undefined> {
    const { rows } = await this.pool.query(`SELECT ${REVISION_COLUMNS} FROM sync_revisions ORDER BY revision DESC LIMIT 1`);
    return rows[0] ? revisionView(rows[0]) : undefined;
  }

  async revisions(q: { limit: number; before?: number }): Promise<RevisionView[]> {
    const { rows } = await this.pool.query(
      `SELECT ${REVISION_COLUMNS} FROM sync_revisions WHERE ($1::bigint IS NULL OR revision < $1) ORDER BY revision DESC LIMIT $2`,
      [q.before ?? null, q.limit],
    );
    return rows.map(revisionView);
  }
}
