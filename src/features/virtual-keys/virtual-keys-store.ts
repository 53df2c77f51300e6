import type { Pool, PoolClient } from '../../db/pool';
import type { PageRequest } from '../../http/paging';

type Queryable = Pool | PoolClient;

export type VirtualKeyStatus = 'creating' | 'active';
export type RotationStatus = 'generating' | 'retiring' | 'done';

/** What keyplane asks LiteLLM to give a key: the same on create, update and rotation. */
export interface VirtualKeySettings {
  models: string[];
  max_budget: number | null;
  budget_duration: string | null;
  rpm_limit: number | null;
  tpm_limit: number | null;
  duration: string | null;
  metadata: Record<string, unknown>;
}

export interface VirtualKeyRow extends VirtualKeySettings {
  alias: string;
  status: VirtualKeyStatus;
  /** LiteLLM's hash of the key (never the key). */
  token: string | null;
  masked_key: string | null;
  expires_at: Date | null;
  /** The tag of the key keyplane asked LiteLLM to make (metadata.keyplane_op). */
  op: string;
  created_by: string;
  created_at: Date;
  updated_at: Date;
  rotated_at: Date | null;
}

export interface RotationRow {
  id: number;
  alias: string;
  status: RotationStatus;
  old_token: string;
  old_masked_key: string | null;
  new_token: string | null;
  new_masked_key: string | null;
  grace_ms: number;
  delete_at: Date | null;
  deleted_at: Date | null;
  attempts: number;
  last_error: string | null;
  next_attempt_at: Date | null;
  alerted_at: Date | null;
  note: string | null;
  idempotency_key: string | null;
  request_digest: string | null;
  created_by: string;
  created_at: Date;
  updated_at: Date;
}

const SETTINGS = 'models, max_budget, budget_duration, rpm_limit, tpm_limit, duration, metadata';

// bigint columns come back as strings from pg: the limits are read as numbers.
const ROW = `alias, status, token, masked_key, models, max_budget, budget_duration, rpm_limit::float8 AS rpm_limit, tpm_limit::float8 AS tpm_limit,
             duration, metadata, expires_at, op, created_by, created_at, updated_at, rotated_at`;
const ROTATION = `id::float8 AS id, alias, status, old_token, old_masked_key, new_token, new_masked_key, grace_ms::float8 AS grace_ms, delete_at, deleted_at,
                  attempts, last_error, next_attempt_at, alerted_at, note, idempotency_key, request_digest, created_by, created_at, updated_at`;

/** The SQL of virtual keys and their rotations. */
export class VirtualKeysStore {
  constructor(readonly pool: Pool) {}

  /** Reserves the alias while LiteLLM makes the key; a unique violation (23505) means it is taken. */
  async reserve(c: Queryable, alias: string, s: VirtualKeySettings, op: string, createdBy: string): Promise<void> {
    await c.query(`INSERT INTO virtual_keys (alias, status, ${SETTINGS}, op, created_by) VALUES ($1, 'creating', $2, $3, $4, $5, $6, $7, $8::jsonb, $9, $10)`, [
      alias, s.models, s.max_budget, s.budget_duration, s.rpm_limit, s.tpm_limit, s.duration, JSON.stringify(s.metadata), op, createdBy,
    ]);
  }

  async activate(c: Queryable, alias: string, k: { token: string; maskedKey: string | null; expiresAt: Date | null }): Promise<VirtualKeyRow> {
    const { rows } = await c.query<VirtualKeyRow>(
      `UPDATE virtual_keys SET status = 'active', token = $2, masked_key = $3, expires_at = $4, updated_at = now() WHERE alias = $1 AND status = 'creating' RETURNING ${ROW}`,
      [alias, k.token, k.maskedKey, k.expiresAt],
    );
    if (!rows[0]) throw new Error(`virtual key ${alias} is no longer being created`);
    return rows[0];
  }

  /** Drops a reservation (LiteLLM refused, or the leader cleans up after a crash). */
  async unreserve(c: Queryable, alias: string): Promise<void> {
    await c.query(`DELETE FROM virtual_keys WHERE alias = $1 AND status = 'creating'`, [alias]);
  }

  async get(alias: string, c: Queryable = this.pool): Promise<VirtualKeyRow | undefined> {
    return (await c.query<VirtualKeyRow>(`SELECT ${ROW} FROM virtual_keys WHERE alias = $1`, [alias])).rows[0];
  }

  /** Locks one virtual key for a write: writes of one alias take turns across instances. */
  async lock(c: PoolClient, alias: string): Promise<VirtualKeyRow | undefined> {
    return (await c.query<VirtualKeyRow>(`SELECT ${ROW} FROM virtual_keys WHERE alias = $1 FOR UPDATE`, [alias])).rows[0];
  }

  /** Virtual keys by alias, after `page.after`. */
  async list(page: PageRequest<string>): Promise<VirtualKeyRow[]> {
    const { rows } = await this.pool.query<VirtualKeyRow>(`SELECT ${ROW} FROM virtual_keys WHERE ($1::text IS NULL OR alias > $1) ORDER BY alias LIMIT $2`, [page.after ?? null, page.limit]);
    return rows;
  }

  async updateSettings(c: PoolClient, alias: string, s: VirtualKeySettings, expiresAt: Date | null): Promise<VirtualKeyRow> {
    const { rows } = await c.query<VirtualKeyRow>(
      `UPDATE virtual_keys SET models = $2, max_budget = $3, budget_duration = $4, rpm_limit = $5, tpm_limit = $6, duration = $7, metadata = $8::jsonb,
         expires_at = $9, updated_at = now() WHERE alias = $1 RETURNING ${ROW}`,
      [alias, s.models, s.max_budget, s.budget_duration, s.rpm_limit, s.tpm_limit, s.duration, JSON.stringify(s.metadata), expiresAt],
    );
    return rows[0]!;
  }

  /** The new key takes the alias; undefined when the key changed meanwhile (deleted, rotated). */
  async replaceKey(c: PoolClient, alias: string, oldToken: string, k: { token: string; maskedKey: string | null; expiresAt: Date | null }): Promise<VirtualKeyRow | undefined> {
    const { rows } = await c.query<VirtualKeyRow>(
      `UPDATE virtual_keys SET token = $3, masked_key = $4, expires_at = $5, rotated_at = now(), updated_at = now()
       WHERE alias = $1 AND status = 'active' AND token = $2 RETURNING ${ROW}`,
      [alias, oldToken, k.token, k.maskedKey, k.expiresAt],
    );
    return rows[0];
  }

  async remove(c: PoolClient, alias: string): Promise<void> {
    await c.query('DELETE FROM virtual_keys WHERE alias = $1', [alias]);
  }

  /** Reservations older than `ms` (by the database's clock): a crash left them. */
  async staleReservations(ms: number): Promise<VirtualKeyRow[]> {
    const { rows } = await this.pool.query<VirtualKeyRow>(`SELECT ${ROW} FROM virtual_keys WHERE status = 'creating' AND updated_at < now() - $1::float8 * interval '1 millisecond'`, [ms]);
    return rows;
  }

  // --- rotations ---

  async startRotation(c: PoolClient, r: { alias: string; oldToken: string; oldMaskedKey: string | null; graceMs: number; idempotencyKey: string | null; requestDigest: string | null; createdBy: string }): Promise<RotationRow> {
    const { rows } = await c.query<RotationRow>(
      `INSERT INTO virtual_key_rotations (alias, status, old_token, old_masked_key, grace_ms, idempotency_key, request_digest, created_by)
       VALUES ($1, 'generating', $2, $3, $4, $5, $6, $7) RETURNING ${ROTATION}`,
      [r.alias, r.oldToken, r.oldMaskedKey, r.graceMs, r.idempotencyKey, r.requestDigest, r.createdBy],
    );
    return rows[0]!;
  }

  /** The new key is in place: the old one is deleted `grace_ms` from now (by the database's clock). */
  async retire(c: PoolClient, id: number, k: { token: string; maskedKey: string | null }): Promise<RotationRow> {
    const { rows } = await c.query<RotationRow>(
      `UPDATE virtual_key_rotations SET status = 'retiring', new_token = $2, new_masked_key = $3,
         delete_at = clock_timestamp() + grace_ms * interval '1 millisecond', next_attempt_at = NULL, updated_at = now()
       WHERE id = $1 AND status = 'generating' RETURNING ${ROTATION}`,
      [id, k.token, k.maskedKey],
    );
    if (!rows[0]) throw new Error(`rotation ${id} is no longer generating`);
    return rows[0];
  }

  /** A rotation that made nothing is forgotten, its Idempotency-Key with it: a refused request is not remembered. */
  async dropRotation(c: Queryable, id: number): Promise<void> {
    await c.query(`DELETE FROM virtual_key_rotations WHERE id = $1 AND status = 'generating'`, [id]);
  }

  async rotation(id: number, c: Queryable = this.pool): Promise<RotationRow | undefined> {
    return (await c.query<RotationRow>(`SELECT ${ROTATION} FROM virtual_key_rotations WHERE id = $1`, [id])).rows[0];
  }

  async byIdempotencyKey(key: string): Promise<RotationRow | undefined> {
    return (await this.pool.query<RotationRow>(`SELECT ${ROTATION} FROM virtual_key_rotations WHERE idempotency_key = $1`, [key])).rows[0];
  }

  async generating(c: Queryable, alias: string): Promise<RotationRow | undefined> {
    return (await c.query<RotationRow>(`SELECT ${ROTATION} FROM virtual_key_rotations WHERE alias = $1 AND status = 'generating'`, [alias])).rows[0];
  }

  /** The old keys of `aliases` still waiting for their deadline. */
  async retiring(c: Queryable, aliases: string[]): Promise<RotationRow[]> {
    const { rows } = await c.query<RotationRow>(`SELECT ${ROTATION} FROM virtual_key_rotations WHERE alias = ANY($1::text[]) AND status = 'retiring' ORDER BY id`, [aliases]);
    return rows;
  }

  /** Old keys deleted together with their virtual key. */
  async closeRetiring(c: PoolClient, alias: string, note: string): Promise<number[]> {
    const { rows } = await c.query<{ id: number }>(
      `UPDATE virtual_key_rotations SET status = 'done', deleted_at = now(), note = $2, updated_at = now() WHERE alias = $1 AND status = 'retiring' RETURNING id::float8 AS id`,
      [alias, note],
    );
    return rows.map((r) => r.id);
  }

  /** Rotations whose old key is due for deletion now (deadline passed, and not waiting for a retry). */
  async due(): Promise<RotationRow[]> {
    const { rows } = await this.pool.query<RotationRow>(
      `SELECT ${ROTATION} FROM virtual_key_rotations WHERE status = 'retiring' AND delete_at <= now() AND (next_attempt_at IS NULL OR next_attempt_at <= now()) ORDER BY delete_at, id`,
    );
    return rows;
  }

  /** Milliseconds until the next deadline or retry (by the database's clock), or undefined. */
  async msToNext(): Promise<number | undefined> {
    const { rows } = await this.pool.query<{ ms: number | null }>(
      `SELECT (extract(epoch FROM min(greatest(delete_at, coalesce(next_attempt_at, delete_at))) - now()) * 1000)::float8 AS ms FROM virtual_key_rotations WHERE status = 'retiring'`,
    );
    const ms = rows[0]?.ms;
    return ms === null || ms === undefined ? undefined : Math.max(0, ms);
  }

  /** The old key is deleted (or was gone): the rotation is done. False when another instance closed it first. */
  async markDeleted(c: PoolClient, id: number, note: string | null): Promise<RotationRow | undefined> {
    const { rows } = await c.query<RotationRow>(
      `UPDATE virtual_key_rotations SET status = 'done', deleted_at = now(), note = $2, next_attempt_at = NULL, updated_at = now()
       WHERE id = $1 AND status = 'retiring' RETURNING ${ROTATION}`,
      [id, note],
    );
    return rows[0];
  }

  /** A deletion failed: counted, its error kept, tried again `retryMs` from now. */
  async markFailed(id: number, error: string, retryMs: number): Promise<RotationRow | undefined> {
    const { rows } = await this.pool.query<RotationRow>(
      `UPDATE virtual_key_rotations SET attempts = attempts + 1, last_error = $2, next_attempt_at = now() + $3::float8 * interval '1 millisecond', updated_at = now()
       WHERE id = $1 AND status = 'retiring' RETURNING ${ROTATION}`,
      [id, error, retryMs],
    );
    return rows[0];
  }

  async markAlerted(id: number): Promise<void> {
    await this.pool.query('UPDATE virtual_key_rotations SET alerted_at = now() WHERE id = $1', [id]);
  }

  /** Rotations left `generating` longer than `ms`: a crash left them. */
  async staleGenerating(ms: number): Promise<RotationRow[]> {
    const { rows } = await this.pool.query<RotationRow>(`SELECT ${ROTATION} FROM virtual_key_rotations WHERE status = 'generating' AND updated_at < now() - $1::float8 * interval '1 millisecond'`, [ms]);
    return rows;
  }
}
