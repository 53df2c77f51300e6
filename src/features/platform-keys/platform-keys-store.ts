import type { Pool, PoolClient, Statement } from '../../db/pool';
import type { StoredJwe } from '../../crypto/keyring';
import { auditCtes, type AuditEntry } from '../audit/audit-store';

export interface KeyRow {
  name: string;
  env_var: string;
  current_version: number;
  expires_at: Date | null;
  created_at: Date;
  updated_at: Date;
  fingerprint: string;
  last4: string;
  kid: string;
}

export interface VersionRow {
  name: string;
  version: number;
  fingerprint: string;
  last4: string;
  kid: string;
  expires_at: Date | null;
  created_by: string;
  created_at: Date;
}

const KEY_COLUMNS = `k.name, k.env_var, k.current_version, k.expires_at, k.created_at, k.updated_at, v.fingerprint, v.last4, v.kid`;

export class PlatformKeysStore {
  constructor(private readonly pool: Pool) {}

  async list(): Promise<KeyRow[]> {
    const { rows } = await this.pool.query<KeyRow>(
      `SELECT ${KEY_COLUMNS} FROM platform_keys k JOIN platform_key_versions v ON v.name = k.name AND v.version = k.current_version ORDER BY k.name`,
    );
    return rows;
  }

  async get(name: string, client: Pool | PoolClient = this.pool, lock = false): Promise<KeyRow | undefined> {
    // Lock the head row on its own first: a locked join re-checked after a concurrent commit would
    // not see that commit's new version row and would wrongly find nothing.
    if (lock) await client.query('SELECT 1 FROM platform_keys WHERE name = $1 FOR UPDATE', [name]);
    const { rows } = await client.query<KeyRow>(
      `SELECT ${KEY_COLUMNS} FROM platform_keys k JOIN platform_key_versions v ON v.name = k.name AND v.version = k.current_version
       WHERE k.name = $1`,
      [name],
    );
    return rows[0];
  }

  async versions(name: string): Promise<VersionRow[]> {
    const { rows } = await this.pool.query<VersionRow>(
      'SELECT name, version, fingerprint, last4, kid, expires_at, created_by, created_at FROM platform_key_versions WHERE name = $1 ORDER BY version DESC',
      [name],
    );
    return rows;
  }

  async cipher(name: string, version: number, client: Pool | PoolClient = this.pool): Promise<{ jwe: StoredJwe; expires_at: Date | null } | undefined> {
    const { rows } = await client.query<{ jwe: StoredJwe; expires_at: Date | null }>(
      'SELECT jwe, expires_at FROM platform_key_versions WHERE name = $1 AND version = $2',
      [name, version],
    );
    return rows[0];
  }

  /** The current version of every key, encrypted, for the renderer. */
  async currentCiphers(client: Pool | PoolClient = this.pool): Promise<Array<{ name: string; env_var: string; version: number; jwe: StoredJwe; expires_at: Date | null }>> {
    const { rows } = await client.query(
      `SELECT k.name, k.env_var, k.current_version AS version, v.jwe, k.expires_at
       FROM platform_keys k JOIN platform_key_versions v ON v.name = k.name AND v.version = k.current_version ORDER BY k.name`,
    );
    return rows;
  }

  /** Locks the key's head row (alone: see get()); no row for a new key. */
  lockHeadStatement(name: string): Statement {
    return { text: 'SELECT env_var, current_version FROM platform_keys WHERE name = $1 FOR UPDATE', values: [name] };
  }

  /**
   * Writes a new version and points the head at it, in one statement. For a new key the head is
   * inserted; no row back means another transaction created the key first.
   */
  writeVersionStatement(
    create: boolean,
    v: { name: string; envVar: string; version: number; jwe: StoredJwe; kid: string; fingerprint: string; last4: string; expiresAt: Date | null; createdBy: string },
  ): Statement {
    const head = create
      ? `INSERT INTO platform_keys (name, env_var, current_version, expires_at) VALUES ($1, $2, $3::int, $4::timestamptz) ON CONFLICT (name) DO NOTHING RETURNING *`
      : `UPDATE platform_keys SET env_var = $2, current_version = $3::int, expires_at = $4::timestamptz, updated_at = now() WHERE name = $1 RETURNING *`;
    return {
      text: `WITH h AS (${head}),
            v AS (INSERT INTO platform_key_versions (name, version, jwe, kid, fingerprint, last4, expires_at, created_by)
                  SELECT h.name, $3::int, $5::jsonb, $6, $7, $8, $4::timestamptz, $9 FROM h RETURNING fingerprint, last4, kid)
       SELECT h.name, h.env_var, h.current_version, h.expires_at, h.created_at, h.updated_at, v.fingerprint, v.last4, v.kid FROM h, v`,
      values: [v.name, v.envVar, v.version, v.expiresAt, v.jwe, v.kid, v.fingerprint, v.last4, v.createdBy],
    };
  }

  /**
   * A rotation as one statement (so one round trip, atomic on its own): the new version, the head
   * moved to it only if it is still at `prev`, and the audit row only if it was. No row back: the
   * key is not at `prev` any more (another instance wrote it) or is gone.
   */
  async rotate(
    pool: Pool,
    v: { name: string; envVar: string; version: number; prev: number; jwe: StoredJwe; kid: string; fingerprint: string; last4: string; expiresAt: Date | null; createdBy: string },
    audit: AuditEntry,
  ): Promise<KeyRow | undefined> {
    const a = auditCtes(audit, 11, 'EXISTS (SELECT 1 FROM h)');
    const { rows } = await pool.query<KeyRow>(
      `WITH h AS (UPDATE platform_keys SET current_version = $3::int, expires_at = $4::timestamptz, updated_at = now()
                  WHERE name = $1 AND env_var = $2 AND current_version = $10::int RETURNING *),
            v AS (INSERT INTO platform_key_versions (name, version, jwe, kid, fingerprint, last4, expires_at, created_by)
                  SELECT h.name, $3::int, $5::jsonb, $6, $7, $8, $4::timestamptz, $9 FROM h RETURNING fingerprint, last4, kid),
            ${a.ctes}
       SELECT h.name, h.env_var, h.current_version, h.expires_at, h.created_at, h.updated_at, v.fingerprint, v.last4, v.kid FROM h, v`,
      [v.name, v.envVar, v.version, v.expiresAt, v.jwe, v.kid, v.fingerprint, v.last4, v.createdBy, v.prev, ...a.values],
    );
    return rows[0];
  }

  async versionFingerprint(name: string, version: number): Promise<string | undefined> {
    const { rows } = await this.pool.query<{ fingerprint: string }>('SELECT fingerprint FROM platform_key_versions WHERE name = $1 AND version = $2', [name, version]);
    return rows[0]?.fingerprint;
  }

  async envVarOwner(c: PoolClient, envVar: string): Promise<string | undefined> {
    const { rows } = await c.query<{ name: string }>('SELECT name FROM platform_keys WHERE env_var = $1', [envVar]);
    return rows[0]?.name;
  }

  async delete(c: PoolClient, name: string): Promise<void> {
    await c.query('DELETE FROM platform_keys WHERE name = $1', [name]);
  }
}
