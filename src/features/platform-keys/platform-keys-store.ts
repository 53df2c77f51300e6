import type { KeyState } from '../../sync/desired-state';
import type { Pool, PoolClient, Statement } from '../../db/pool';
import type { StoredJwe } from '../../crypto/keyring';
import type { AuditRowInput } from '../audit/audit-store';
import type { PageRequest } from '../../http/paging';

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
  state: KeyState;
  state_reason: string | null;
  state_note: string | null;
  state_since: Date;
  state_until: Date | null;
  replaced_by: string | null;
}

/** The incident view's filters: every one given must hold. */
export interface KeyFilter {
  /** In one of these states. */
  states?: KeyState[];
  /** The current version (the value in use) was written more than this long ago. */
  olderThanMs?: number;
  /** In this provider's pool. */
  provider?: string;
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

/** Where clear text is stored that a key's value must never equal: SQL conditions on a text expression `v`. */
const CLEAR_TEXT: Array<{ what: string; sql: (v: string) => string }> = [
  { what: 'model field', sql: (v) => `EXISTS (SELECT 1 FROM models WHERE model_name = ${v} OR model = ${v} OR api_base = ${v})` },
  {
    what: 'model parameter',
    sql: (v) => `EXISTS (SELECT 1 FROM models WHERE jsonb_path_exists(litellm_params, 'strict $.** ? (@ == $v)', jsonb_build_object('v', ${v}), true)
      OR jsonb_path_exists(model_info, 'strict $.** ? (@ == $v)', jsonb_build_object('v', ${v}), true)
      OR jsonb_path_exists(litellm_params, 'lax $.**.keyvalue() ? (@.key == $v)', jsonb_build_object('v', ${v}), true)
      OR jsonb_path_exists(model_info, 'lax $.**.keyvalue() ? (@.key == $v)', jsonb_build_object('v', ${v}), true))`,
  },
  {
    what: 'routing name',
    sql: (v) => `EXISTS (SELECT 1 FROM routing WHERE aliases ? ${v} OR fallbacks ? ${v}
      OR jsonb_path_exists(aliases, 'strict $.** ? (@ == $v)', jsonb_build_object('v', ${v}), true)
      OR jsonb_path_exists(fallbacks, 'strict $.** ? (@ == $v)', jsonb_build_object('v', ${v}), true))`,
  },
];

const STATE_COLUMNS = 'state, state_reason, state_note, state_since, state_until, replaced_by';
const KEY_COLUMNS = `k.name, k.env_var, k.current_version, k.expires_at, k.created_at, k.updated_at, v.fingerprint, v.last4, v.kid, ${STATE_COLUMNS.split(', ').map((c) => `k.${c}`).join(', ')}`;
const HEAD_STATE = STATE_COLUMNS.split(', ').map((c) => `h.${c}`).join(', ');

export class PlatformKeysStore {
  constructor(private readonly pool: Pool) {}

  /** Keys by name, after `page.after` (a name), that pass `filter`. */
  async list(page: PageRequest<string>, filter: KeyFilter = {}): Promise<KeyRow[]> {
    const { rows } = await this.pool.query<KeyRow>(
      `SELECT ${KEY_COLUMNS} FROM platform_keys k JOIN platform_key_versions v ON v.name = k.name AND v.version = k.current_version
       WHERE ($1::text IS NULL OR k.name > $1)
         AND ($3::text[] IS NULL OR k.state = ANY ($3::text[]))
         AND ($4::double precision IS NULL OR v.created_at < now() - $4::double precision * interval '1 millisecond')
         AND ($5::text IS NULL OR EXISTS (SELECT 1 FROM provider_keys pk WHERE pk.provider = $5 AND pk.key_name = k.name))
       ORDER BY k.name LIMIT $2`,
      [page.after ?? null, page.limit, filter.states ?? null, filter.olderThanMs ?? null, filter.provider ?? null],
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

  /** A key's versions, newest first, before `page.after` (a version). */
  async versions(name: string, page: PageRequest<number>): Promise<VersionRow[]> {
    const { rows } = await this.pool.query<VersionRow>(
      `SELECT name, version, fingerprint, last4, kid, expires_at, created_by, created_at FROM platform_key_versions
       WHERE name = $1 AND ($2::int IS NULL OR version < $2) ORDER BY version DESC LIMIT $3`,
      [name, page.after ?? null, page.limit],
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
       SELECT h.name, h.env_var, h.current_version, h.expires_at, h.created_at, h.updated_at, v.fingerprint, v.last4, v.kid, ${HEAD_STATE} FROM h, v`,
      values: [v.name, v.envVar, v.version, v.expiresAt, v.jwe, v.kid, v.fingerprint, v.last4, v.createdBy],
    };
  }

  /**
   * Rotations of one key as one statement (one round trip, atomic on its own): versions prev+1 ..
   * prev+k, the head moved to the last only if it is still at `prev`, and one audit row per
   * version, chained in order from the chain's head (sha256(prev_hash || digest), as auditHash
   * computes it). No row back: the key is not at `prev` any more (another instance wrote it) or is
   * gone, or one of `values` equals stored clear text (see textEqualTo; the locked path says which).
   */
  async rotateMany(
    client: Pool | PoolClient,
    key: { name: string; envVar: string; prev: number },
    values: string[],
    items: Array<{ version: number; jwe: StoredJwe; kid: string; fingerprint: string; last4: string; expiresAt: Date | null; createdBy: string; audit: AuditRowInput }>,
  ): Promise<KeyRow | undefined> {
    const last = items[items.length - 1]!;
    const rows = items.map((it, i) => ({
      i: i + 1,
      version: it.version,
      jwe: it.jwe,
      kid: it.kid,
      fingerprint: it.fingerprint,
      last4: it.last4,
      expires_at: it.expiresAt?.toISOString() ?? null,
      created_by: it.createdBy,
      at: it.audit.at.toISOString(),
      actor: it.audit.actor,
      action: it.audit.action,
      target: it.audit.target,
      request_id: it.audit.request_id,
      details: it.audit.details,
      digest: it.audit.digest,
    }));
    const { rows: out } = await client.query<KeyRow>(
      `WITH RECURSIVE
         h AS (UPDATE platform_keys SET current_version = $4::int, expires_at = $5::timestamptz, updated_at = now()
               WHERE name = $1 AND env_var = $2 AND current_version = $3::int
                 AND NOT EXISTS (SELECT 1 FROM unnest($11::text[]) AS nv(s) WHERE ${CLEAR_TEXT.map((c) => c.sql('nv.s')).join(' OR ')})
               RETURNING *),
         x AS (SELECT * FROM jsonb_to_recordset($6::jsonb) AS x(i int, version int, jwe jsonb, kid text, fingerprint text, last4 text,
               expires_at timestamptz, created_by text, at timestamptz, actor text, action text, target text, request_id text, details jsonb, digest text)),
         v AS (INSERT INTO platform_key_versions (name, version, jwe, kid, fingerprint, last4, expires_at, created_by)
               SELECT h.name, x.version, x.jwe, x.kid, x.fingerprint, x.last4, x.expires_at, x.created_by FROM h, x RETURNING version),
         head AS (SELECT hash FROM audit_head WHERE id = 1 AND EXISTS (SELECT 1 FROM h) FOR UPDATE),
         chain (i, prev_hash, hash) AS (
           SELECT 1, head.hash, encode(sha256(convert_to(head.hash || x.digest, 'UTF8')), 'hex') FROM head JOIN x ON x.i = 1
           UNION ALL
           SELECT c.i + 1, c.hash, encode(sha256(convert_to(c.hash || x.digest, 'UTF8')), 'hex') FROM chain c JOIN x ON x.i = c.i + 1),
         appended AS (INSERT INTO audit_log (at, actor, action, target, version, request_id, details, prev_hash, hash)
               SELECT x.at, x.actor, x.action, x.target, x.version, x.request_id, x.details, c.prev_hash, c.hash
               FROM chain c JOIN x ON x.i = c.i ORDER BY c.i RETURNING 1),
         moved AS (UPDATE audit_head SET hash = (SELECT hash FROM chain ORDER BY i DESC LIMIT 1) WHERE id = 1 AND EXISTS (SELECT 1 FROM head))
       SELECT h.name, h.env_var, h.current_version, h.expires_at, h.created_at, h.updated_at, $7::text AS fingerprint, $8::text AS last4, $9::text AS kid, ${HEAD_STATE}
       FROM h WHERE (SELECT count(*) FROM v) = $10::int`,
      [key.name, key.envVar, key.prev, last.version, last.expiresAt, JSON.stringify(rows), last.fingerprint, last.last4, last.kid, items.length, values],
    );
    return out[0];
  }

  /** The fingerprints of versions `from`..`to` that exist. */
  async versionFingerprints(name: string, from: number, to: number): Promise<Map<number, string>> {
    const { rows } = await this.pool.query<{ version: number; fingerprint: string }>(
      'SELECT version, fingerprint FROM platform_key_versions WHERE name = $1 AND version BETWEEN $2 AND $3',
      [name, from, to],
    );
    return new Map(rows.map((r) => [r.version, r.fingerprint]));
  }

  /**
   * What kind of clear-text string already equals `value` (a model's name, id, api_base, any value or
   * key in its litellm_params or model_info, an alias or fallback), or undefined. Equality only.
   */
  async textEqualTo(value: string, client: Pool | PoolClient = this.pool): Promise<string | undefined> {
    const { rows } = await client.query<{ what: string | null }>(
      `SELECT CASE ${CLEAR_TEXT.map((c) => `WHEN ${c.sql('$1::text')} THEN '${c.what}'`).join(' ')} END AS what`,
      [value],
    );
    return rows[0]?.what ?? undefined;
  }

  async envVarOwner(c: PoolClient, envVar: string): Promise<string | undefined> {
    const { rows } = await c.query<{ name: string }>('SELECT name FROM platform_keys WHERE env_var = $1', [envVar]);
    return rows[0]?.name;
  }

  async delete(c: PoolClient, name: string): Promise<void> {
    await c.query('DELETE FROM platform_keys WHERE name = $1', [name]);
  }
}
