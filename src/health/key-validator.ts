import type { KeyValidator } from '../features/platform-keys/platform-keys-service';
import type { Logger, SecretRegistry } from '../log';
import type { HealthStore } from './health-store';
import { probeProvider } from './probes';

export interface KeyValidatorDeps {
  store: HealthStore;
  log: Logger;
  /** The per-probe timeout (KEYPLANE_HEALTH_TIMEOUT). */
  timeoutMs: number;
  /** The new value is not stored yet, so the keyring has not registered it for redaction; this does. */
  secrets: SecretRegistry;
}

/**
 * Tries a new key value against every enabled provider that uses the key, before it is stored.
 * Only a refusal (401/403, or the provider's own "invalid key" code) fails validation: an outage or
 * a timeout says nothing about the key, and must not block a rotation.
 */
export function createKeyValidator(deps: KeyValidatorDeps): KeyValidator {
  const log = deps.log.child({ component: 'key-validator' });
  return async (keyName, apiKey) => {
    deps.secrets.add(apiKey);
    // Only where an admin approved sending this key: a new value goes nowhere the old one could not.
    const providers = (await deps.store.providersUsingKey(keyName)).filter((p) => p.approved);
    const results = await Promise.all(
      providers.map(async (p) => ({
        slug: p.slug,
        obs: await probeProvider({ kind: p.kind, apiBase: p.api_base, apiKey, degradedMs: p.degraded_ms }, { timeoutMs: deps.timeoutMs }),
      })),
    );
    const refused = results.filter((r) => r.obs.reason === 'auth_failed');
    if (refused.length) {
      log.warn('a new key value was refused by its provider', { key_name: keyName, providers: refused.map((r) => r.slug) });
      return { ok: false, reason: 'auth_failed', detail: refused.map((r) => `${r.slug}: ${r.obs.detail}`).join('; '), providers: refused.map((r) => r.slug) };
    }
    const inconclusive = results.filter((r) => r.obs.status === 'down' || r.obs.reason === 'unsupported');
    if (inconclusive.length) {
      log.warn('a new key value could not be checked everywhere; accepted', {
        key_name: keyName,
        unchecked: inconclusive.map((r) => ({ provider: r.slug, reason: r.obs.reason, detail: r.obs.detail })),
      });
    }
    return { ok: true, providers: results.filter((r) => !inconclusive.includes(r)).map((r) => r.slug) };
  };
}
