import type { Pool, PoolClient } from '../db/pool';
import type { ModelRow } from '../features/models/models-service';
import type { PlatformKeysService } from '../features/platform-keys/platform-keys-service';
import type { Approval } from '../destinations';

/** A platform key as the renderer needs it. `value` is the secret: it goes to the env file only. */
export interface DesiredKey {
  name: string;
  envVar: string;
  version: number;
  value: string;
  fingerprint: string;
  expiresAt: Date | null;
}

export interface DesiredProvider {
  slug: string;
  kind: string;
  apiBase: string | null;
  keyName: string;
  enabled: boolean;
}

export interface DesiredModel {
  id: string;
  modelName: string;
  provider: string;
  model: string;
  apiBase: string | null;
  rpm: number | null;
  tpm: number | null;
  litellmParams: Record<string, unknown>;
  modelInfo: Record<string, unknown>;
}

export interface DesiredRouting {
  aliases: Record<string, string>;
  fallbacks: Record<string, string[]>;
}

/** Everything that shapes LiteLLM's files, read in one consistent snapshot. */
export interface DesiredState {
  keys: DesiredKey[];
  providers: DesiredProvider[];
  models: DesiredModel[];
  routing: DesiredRouting;
  /** The (key, destination) pairs an admin approved; no other pair is rendered, probed or sent. */
  approvals: Approval[];
  /** LiteLLM's config has had a master key: rendering one without it fails closed. */
  authRequired: boolean;
}

/** Reads the whole desired state in one REPEATABLE READ snapshot (a notification is only a nudge). */
export async function loadDesiredState(pool: Pool, platformKeys: PlatformKeysService): Promise<DesiredState> {
  const client: PoolClient = await pool.connect();
  try {
    await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    const secrets = await platformKeys.currentSecrets(client);
    const providers = await client.query<{ slug: string; kind: string; api_base: string | null; key_name: string; enabled: boolean }>(
      'SELECT slug, kind, api_base, key_name, enabled FROM providers ORDER BY slug',
    );
    const models = await client.query<Omit<ModelRow, 'created_at' | 'updated_at'>>('SELECT id, model_name, provider, model, api_base, rpm, tpm, litellm_params, model_info FROM models ORDER BY model_name, created_at, id');
    const routing = await client.query<{ aliases: Record<string, string>; fallbacks: Record<string, string[]> }>('SELECT aliases, fallbacks FROM routing WHERE id = 1');
    const approvals = await client.query<{ key_name: string; destination: string }>('SELECT key_name, destination FROM key_destinations');
    const sync = await client.query<{ auth_required: boolean }>('SELECT auth_required FROM sync_state WHERE id = 1');
    await client.query('COMMIT');
    return {
      keys: secrets.map((s) => ({ name: s.name, envVar: s.env_var, version: s.version, value: s.value, fingerprint: s.fingerprint, expiresAt: s.expires_at })),
      providers: providers.rows.map((p) => ({ slug: p.slug, kind: p.kind, apiBase: p.api_base, keyName: p.key_name, enabled: p.enabled })),
      models: models.rows.map((m) => ({
        id: m.id,
        modelName: m.model_name,
        provider: m.provider,
        model: m.model,
        apiBase: m.api_base,
        rpm: m.rpm,
        tpm: m.tpm,
        litellmParams: m.litellm_params,
        modelInfo: m.model_info,
      })),
      routing: routing.rows[0] ?? { aliases: {}, fallbacks: {} },
      approvals: approvals.rows.map((a) => ({ keyName: a.key_name, destination: a.destination })),
      authRequired: sync.rows[0]?.auth_required ?? false,
    };
  } catch (err) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw err;
  } finally {
    client.release();
  }
}
