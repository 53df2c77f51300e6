import type { Pool } from '../db/pool';
import { withTransaction } from '../db/pool';
import type { StoredJwe } from '../crypto/keyring';
import { platformKeyRef } from '../crypto/secret-tables';
import { MASTER_KEY_NAME } from '../key-rules';

export type OwnedKind = 'credential' | 'model';

export interface Owned {
  credentials: Set<string>;
  /** LiteLLM model ids (keyplane gives each model its own id there). */
  models: Set<string>;
  /** Whether the one-time adoption after an upgrade (migration 006) was done. */
  adopted: boolean;
}

/** Decrypts a stored secret (the keyring's `decrypt`); the value joins the log redaction. */
export type Decrypt = (jwe: StoredJwe, ref: string) => Promise<string>;

/**
 * What keyplane keeps about LiteLLM in its own database (litellm-api mode): the ledger of the
 * credentials and models it created there (`litellm_owned`: nothing else is ever changed or deleted
 * there), and the version of `litellm_master_key` that LiteLLM was last seen to accept.
 */
export class LitellmStateStore {
  constructor(
    private readonly pool: Pool,
    private readonly decrypt: Decrypt,
  ) {}

  async owned(): Promise<Owned> {
    const [rows, state] = await Promise.all([
      this.pool.query<{ kind: OwnedKind; name: string }>('SELECT kind, name FROM litellm_owned'),
      this.pool.query<{ adopted_at: Date | null }>('SELECT adopted_at FROM litellm_api_state WHERE id = 1'),
    ]);
    const out: Owned = { credentials: new Set(), models: new Set(), adopted: state.rows[0]?.adopted_at != null };
    for (const r of rows.rows) (r.kind === 'credential' ? out.credentials : out.models).add(r.name);
    return out;
  }

  /** Recorded before the create is sent: a create whose answer is lost must still count as keyplane's. */
  async own(kind: OwnedKind, name: string): Promise<void> {
    await this.pool.query('INSERT INTO litellm_owned (kind, name) VALUES ($1, $2) ON CONFLICT DO NOTHING', [kind, name]);
  }

  async disown(kind: OwnedKind, name: string): Promise<void> {
    await this.pool.query('DELETE FROM litellm_owned WHERE kind = $1 AND name = $2', [kind, name]);
  }

  /** Records the one-time adoption with what it found. */
  async adopt(items: Array<{ kind: OwnedKind; name: string }>): Promise<void> {
    await withTransaction(this.pool, async (c) => {
      await c.query(
        `INSERT INTO litellm_owned (kind, name) SELECT * FROM unnest($1::text[], $2::text[]) ON CONFLICT DO NOTHING`,
        [items.map((i) => i.kind), items.map((i) => i.name)],
      );
      await c.query('UPDATE litellm_api_state SET adopted_at = now(), updated_at = now() WHERE id = 1');
    });
  }

  async knownMasterVersion(): Promise<number | null> {
    const { rows } = await this.pool.query<{ known_master_version: number | null }>('SELECT known_master_version FROM litellm_api_state WHERE id = 1');
    return rows[0]?.known_master_version ?? null;
  }

  async setKnownMasterVersion(version: number): Promise<void> {
    await this.pool.query('UPDATE litellm_api_state SET known_master_version = $1, updated_at = now() WHERE id = 1', [version]);
  }

  /** One version of litellm_master_key, decrypted; undefined when that version is gone. */
  async masterKeyAt(version: number): Promise<string | undefined> {
    const { rows } = await this.pool.query<{ jwe: StoredJwe }>('SELECT jwe FROM platform_key_versions WHERE name = $1 AND version = $2', [MASTER_KEY_NAME, version]);
    const row = rows[0];
    return row ? this.decrypt(row.jwe, platformKeyRef(MASTER_KEY_NAME, version)) : undefined;
  }
}
