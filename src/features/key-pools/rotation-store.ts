import type { Pool, PoolClient } from '../../db/pool';
import type { PageRequest } from '../../http/paging';
import type { KeyState } from '../../sync/desired-state';

type Queryable = Pool | PoolClient;

/**
 * `waiting_for_reload`: the new key is in the pools, LiteLLM does not serve it yet; `retiring`: the
 * old key is served until `retire_at`; `done`: the old key is out of the files; `failed`: stopped,
 * the old key left as it was.
 */
export type RotationStatus = 'waiting_for_reload' | 'retiring' | 'done' | 'failed';
export const OPEN_STATUSES: readonly RotationStatus[] = ['waiting_for_reload', 'retiring'];

export type StepName = 'validated' | 'added' | 'rendered' | 'served' | 'retiring' | 'removed' | 'failed';

/** One step as the API and the audit log show it: what happened, when, and its particulars (never a secret). */
export type RotationStep = { step: StepName; at: string } & Record<string, unknown>;

export interface RotationRow {
  id: number;
  provider: string;
  new_key: string;
  replaces: string;
  pools: string[];
  grace_ms: number;
  status: RotationStatus;
  steps: RotationStep[];
  after_revision: number;
  new_fingerprint: string;
  rendered_revision: number | null;
  wait_generation: number | null;
  retire_at: Date | null;
  error: string | null;
  idempotency_key: string | null;
  request_digest: string | null;
  created_by: string;
  created_at: Date;
  updated_at: Date;
}

export interface NewRotation {
  provider: string;
  newKey: string;
  replaces: string;
  pools: string[];
  graceMs: number;
  steps: RotationStep[];
  afterRevision: number;
  newFingerprint: string;
  idempotencyKey: string | null;
  requestDigest: string | null;
  createdBy: string;
}

/** What changes in one step; `step` is appended to the row's steps. */
export interface RotationUpdate {
  status?: RotationStatus;
  step?: RotationStep;
  renderedRevision?: number | null;
  waitGeneration?: number | null;
  retireAt?: Date;
  error?: string;
}

/** A key of a provider's pool, with what the rotation needs to choose and move it. */
export interface PoolMember {
  provider: string;
  key_name: string;
  weight: number;
  position: number;
  /** Null when the platform key does not exist. */
  state: KeyState | null;
  /** When the key's current value was written. */
  version_at: Date | null;
}

/** A provider as a rotation sees it: where its keys go. */
export interface PoolProvider {
  slug: string;
  kind: string;
  api_base: string | null;
  enabled: boolean;
  /** The replaced key's place in this provider's pool. */
  weight: number;
  position: number;
  size: number;
  /** Every model's own api_base (null: the provider's). */
  model_bases: Array<string | null>;
}

/** The SQL of rotations: their rows, and the pool rows they move. */
export class RotationStore {
  constructor(private readonly pool: Pool) {}

  async insert(c: PoolClient, r: NewRotation): Promise<RotationRow> {
    const { rows } = await c.query<RotationRow>(
      `INSERT INTO key_rotations (provider, new_key, replaces, pools, grace_ms, status, steps, after_revision, new_fingerprint, idempotency_key, request_digest, created_by)
       VALUES ($1, $2, $3, $4, $5, 'waiting_for_reload', $6::jsonb, $7, $8, $9, $10, $11) RETURNING *`,
      [r.provider, r.newKey, r.replaces, r.pools, r.graceMs, JSON.stringify(r.steps), r.afterRevision, r.newFingerprint, r.idempotencyKey, r.requestDigest, r.createdBy],
    );
    return rows[0]!;
  }

  async get(id: number, client: Queryable = this.pool): Promise<RotationRow | undefined> {
    return (await client.query<RotationRow>('SELECT * FROM key_rotations WHERE id = $1', [id])).rows[0];
  }

  async byIdempotencyKey(key: string, client: Queryable = this.pool): Promise<RotationRow | undefined> {
    return (await client.query<RotationRow>('SELECT * FROM key_rotations WHERE idempotency_key = $1', [key])).rows[0];
  }

  /** A provider's rotations, newest first, before `page.after` (an id). */
  async list(provider: string, page: PageRequest<number>): Promise<RotationRow[]> {
    const { rows } = await this.pool.query<RotationRow>(
      'SELECT * FROM key_rotations WHERE provider = $1 AND ($2::bigint IS NULL OR id < $2) ORDER BY id DESC LIMIT $3',
      [provider, page.after ?? null, page.limit],
    );
    return rows;
  }

  /** The open rotation that replaces `key`, if any (one at a time per key). */
  async openReplacing(key: string, client: Queryable = this.pool): Promise<RotationRow | undefined> {
    return (await client.query<RotationRow>(`SELECT * FROM key_rotations WHERE replaces = $1 AND status IN ('waiting_for_reload', 'retiring') ORDER BY id LIMIT 1`, [key])).rows[0];
  }

  async openIds(): Promise<number[]> {
    const { rows } = await this.pool.query<{ id: number }>(`SELECT id FROM key_rotations WHERE status IN ('waiting_for_reload', 'retiring') ORDER BY id`);
    return rows.map((r) => r.id);
  }

  /** Locks an open rotation for one step; undefined when it is closed or another instance holds it. */
  async lockOpen(c: PoolClient, id: number): Promise<RotationRow | undefined> {
    return (await c.query<RotationRow>(`SELECT * FROM key_rotations WHERE id = $1 AND status IN ('waiting_for_reload', 'retiring') FOR UPDATE SKIP LOCKED`, [id])).rows[0];
  }

  async update(c: PoolClient, id: number, u: RotationUpdate): Promise<RotationRow> {
    const { rows } = await c.query<RotationRow>(
      `UPDATE key_rotations SET
         status = coalesce($2, status),
         steps = CASE WHEN $3::jsonb IS NULL THEN steps ELSE steps || jsonb_build_array($3::jsonb) END,
         rendered_revision = CASE WHEN $4 THEN $5::bigint ELSE rendered_revision END,
         wait_generation = CASE WHEN $4 THEN $6::bigint ELSE wait_generation END,
         retire_at = coalesce($7, retire_at),
         error = coalesce($8, error),
         updated_at = now()
       WHERE id = $1 RETURNING *`,
      [
        id,
        u.status ?? null,
        u.step ? JSON.stringify(u.step) : null,
        u.renderedRevision !== undefined,
        u.renderedRevision ?? null,
        u.waitGeneration ?? null,
        u.retireAt ?? null,
        u.error ?? null,
      ],
    );
    return rows[0]!;
  }

  /** Milliseconds until the nearest retirement deadline (by the database's clock), or undefined. */
  async msToNextDeadline(): Promise<number | undefined> {
    const { rows } = await this.pool.query<{ ms: number | null }>(
      `SELECT (extract(epoch FROM min(retire_at) - now()) * 1000)::float8 AS ms FROM key_rotations WHERE status = 'retiring'`,
    );
    const ms = rows[0]?.ms;
    return ms === null || ms === undefined ? undefined : Math.max(0, ms);
  }

  /** The database's clock now (not the transaction's start: a step may take a while), and `ms` later. */
  async nowPlus(c: PoolClient, ms: number): Promise<{ now: Date; later: Date }> {
    return (await c.query<{ now: Date; later: Date }>(`SELECT t AS now, t + $1::float8 * interval '1 millisecond' AS later FROM clock_timestamp() AS t`, [ms])).rows[0]!;
  }

  async deadlinePassed(c: PoolClient, at: Date): Promise<boolean> {
    return (await c.query<{ due: boolean }>('SELECT $1::timestamptz <= now() AS due', [at])).rows[0]!.due;
  }

  /** The newest revision number (0 before the first render). */
  async latestRevision(c: Queryable): Promise<number> {
    return Number((await c.query<{ r: number | null }>('SELECT max(revision) AS r FROM sync_revisions')).rows[0]?.r ?? 0);
  }

  /** The first revision after `after` that rendered `key` with this value, and the reload wish as it stands now. */
  async renderedWith(c: Queryable, key: string, fingerprint: string, after: number): Promise<{ revision: number; created_at: Date; wanted: number } | undefined> {
    const { rows } = await c.query<{ revision: number; created_at: Date; wanted: number }>(
      `SELECT r.revision, r.created_at, s.reload_wanted AS wanted FROM sync_revisions r, sync_state s
       WHERE s.id = 1 AND r.revision > $3 AND r.keys -> $1::text ->> 'fingerprint' = $2 ORDER BY r.revision LIMIT 1`,
      [key, fingerprint, after],
    );
    return rows[0];
  }

  async revisionExists(c: Queryable, revision: number): Promise<boolean> {
    return ((await c.query('SELECT 1 FROM sync_revisions WHERE revision = $1', [revision])).rowCount ?? 0) > 0;
  }

  /** The highest reload generation that finished (see ReloadQueue). */
  async reloadDone(c: Queryable): Promise<number> {
    return Number((await c.query<{ done: number }>('SELECT reload_done AS done FROM sync_state WHERE id = 1')).rows[0]?.done ?? 0);
  }

  // --- pools ---

  async provider(c: Queryable, slug: string): Promise<{ slug: string; kind: string; api_base: string | null; enabled: boolean } | undefined> {
    return (await c.query<{ slug: string; kind: string; api_base: string | null; enabled: boolean }>('SELECT slug, kind, api_base, enabled FROM providers WHERE slug = $1', [slug])).rows[0];
  }

  /** A provider's pool in order, each key with its state and the age of its value. */
  async members(c: Queryable, slug: string): Promise<PoolMember[]> {
    const { rows } = await c.query<PoolMember>(
      `SELECT pk.provider, pk.key_name, pk.weight, pk.position, k.state, v.created_at AS version_at
       FROM provider_keys pk
       LEFT JOIN platform_keys k ON k.name = pk.key_name
       LEFT JOIN platform_key_versions v ON v.name = k.name AND v.version = k.current_version
       WHERE pk.provider = $1 ORDER BY pk.position`,
      [slug],
    );
    return rows;
  }

  /** Every provider whose pool holds `key`, with where its deployments send keys. */
  async poolsHolding(c: Queryable, key: string): Promise<PoolProvider[]> {
    const { rows } = await c.query<PoolProvider>(
      `SELECT p.slug, p.kind, p.api_base, p.enabled, pk.weight, pk.position,
              (SELECT count(*)::int FROM provider_keys o WHERE o.provider = p.slug) AS size,
              coalesce((SELECT array_agg(m.api_base ORDER BY m.id) FROM models m WHERE m.provider = p.slug), '{}') AS model_bases
       FROM provider_keys pk JOIN providers p ON p.slug = pk.provider WHERE pk.key_name = $1 ORDER BY p.slug`,
      [key],
    );
    return rows;
  }

  async keyExists(c: Queryable, name: string): Promise<boolean> {
    return ((await c.query('SELECT 1 FROM platform_keys WHERE name = $1', [name])).rowCount ?? 0) > 0;
  }

  async envVarOwner(c: Queryable, envVar: string): Promise<string | undefined> {
    return (await c.query<{ name: string }>('SELECT name FROM platform_keys WHERE env_var = $1', [envVar])).rows[0]?.name;
  }

  /**
   * Locks the providers whose pools hold `name` (in slug order), then the key: the order a key state
   * transition takes them in, so a rotation's step and a probe's transition cannot deadlock.
   */
  async lockKeyAndPools(c: PoolClient, name: string): Promise<{ state: KeyState } | undefined> {
    await c.query('SELECT 1 FROM providers WHERE slug IN (SELECT provider FROM provider_keys WHERE key_name = $1) ORDER BY slug FOR UPDATE', [name]);
    return this.lockKey(c, name);
  }

  /** Locks the replaced key's row: rotations of one key take turns. */
  async lockKey(c: PoolClient, name: string): Promise<{ state: KeyState } | undefined> {
    return (await c.query<{ state: KeyState }>('SELECT state FROM platform_keys WHERE name = $1 FOR UPDATE', [name])).rows[0];
  }

  /** Puts `key` right after `beside` in each of `providers`' pools, with `beside`'s weight. */
  async addBeside(c: PoolClient, providers: string[], beside: string, key: string): Promise<void> {
    await c.query(
      `UPDATE provider_keys o SET position = o.position + 1
       FROM provider_keys b WHERE b.key_name = $2 AND b.provider = ANY ($1::text[]) AND o.provider = b.provider AND o.position > b.position`,
      [providers, beside],
    );
    await c.query(
      `INSERT INTO provider_keys (provider, key_name, weight, position)
       SELECT b.provider, $3, b.weight, b.position + 1 FROM provider_keys b WHERE b.key_name = $2 AND b.provider = ANY ($1::text[])`,
      [providers, beside, key],
    );
  }

  /**
   * Takes `key` out of each of `providers`' pools that holds another key (a pool is never left
   * empty), closes the gap, and keeps `providers.key_name` the pool's first key. Returns the pools it left.
   */
  async removeFromPools(c: PoolClient, providers: string[], key: string): Promise<string[]> {
    const { rows } = await c.query<{ provider: string }>(
      `DELETE FROM provider_keys pk WHERE pk.key_name = $2 AND pk.provider = ANY ($1::text[])
         AND EXISTS (SELECT 1 FROM provider_keys o WHERE o.provider = pk.provider AND o.key_name <> pk.key_name)
       RETURNING pk.provider`,
      [providers, key],
    );
    const left = rows.map((r) => r.provider).sort();
    if (left.length === 0) return left;
    await c.query(
      `UPDATE provider_keys pk SET position = n.rn - 1
       FROM (SELECT provider, key_name, row_number() OVER (PARTITION BY provider ORDER BY position) AS rn FROM provider_keys WHERE provider = ANY ($1::text[])) n
       WHERE pk.provider = n.provider AND pk.key_name = n.key_name AND pk.position <> n.rn - 1`,
      [left],
    );
    await c.query(
      `UPDATE providers p SET key_name = f.key_name, updated_at = now()
       FROM provider_keys f WHERE f.provider = p.slug AND f.position = 0 AND p.slug = ANY ($1::text[]) AND p.key_name <> f.key_name`,
      [left],
    );
    return left;
  }
}
