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
  /** `disabled` keys are rendered nowhere; the other states are in service (unset: active). */
  state?: KeyState;
}

export type KeyState = 'active' | 'cooling' | 'disabled' | 'retiring';

/** A key of a provider's pool, in pool order. */
export interface PoolKey {
  name: string;
  weight: number;
}

export interface DesiredProvider {
  slug: string;
  kind: string;
  apiBase: string | null;
  /** The pool's first key (a pool of one, before pools). */
  keyName: string;
  /** The pool, in order (unset: `keyName` alone). */
  keys?: PoolKey[];
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

/** A provider's pool: its keys in order, or its one key. */
export function poolOf(p: Pick<DesiredProvider, 'keyName' | 'keys'>): PoolKey[] {
  return p.keys?.length ? p.keys : [{ name: p.keyName, weight: 1 }];
}

/** Whether a key is rendered at all (a disabled one is in neither file). */
export function inService(k: Pick<DesiredKey, 'state'>): boolean {
  return k.state !== 'disabled';
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
    const pools = await client.query<{ provider: string; key_name: string; weight: number }>('SELECT provider, key_name, weight FROM provider_keys ORDER BY provider, position');
    const states = await client.query<{ name: string; state: KeyState }>('SELECT name, state FROM platform_keys');
    const models = await client.query<Omit<ModelRow, 'created_at' | 'updated_at'>>('SELECT id, model_name, provider, model, api_base, rpm, tpm, litellm_params, model_info FROM models ORDER BY model_name, created_at, id');
    const routing = await client.query<{ aliases: Record<string, string>; fallbacks: Record<string, string[]> }>('SELECT aliases, fallbacks FROM routing WHERE id = 1');
    const approvals = await client.query<{ key_name: string; destination: string }>('SELECT key_name, destination FROM key_destinations');
    const sync = await client.query<{ auth_required: boolean }>('SELECT auth_required FROM sync_state WHERE id = 1');
    await client.query('COMMIT');
    const stateOf = new Map(states.rows.map((r) => [r.name, r.state]));
    const poolOf = new Map<string, PoolKey[]>();
    for (const r of pools.rows) {
      const pool = poolOf.get(r.provider) ?? [];
      pool.push({ name: r.key_name, weight: r.weight });
      poolOf.set(r.provider, pool);
    }
    return {
      keys: secrets.map((s) => ({ name: s.name, envVar: s.env_var, version: s.version, value: s.value, fingerprint: s.fingerprint, expiresAt: s.expires_at, state: stateOf.get(s.name) ?? 'active' })),
      providers: providers.rows.map((p) => ({
        slug: p.slug,
        kind: p.kind,
        apiBase: p.api_base,
        keyName: p.key_name,
        keys: poolOf.get(p.slug) ?? [{ name: p.key_name, weight: 1 }],
        enabled: p.enabled,
      })),
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
