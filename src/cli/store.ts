import type { Settings } from '../config';
import type { Keyring } from '../crypto/keyring';
import type { Pool } from '../db/pool';
import { SecretRegistry, type Logger } from '../log';
import { openStore, stopAll } from '../main';

/** Runs `fn` on the migrated store (beside a running server: on its embedded Postgres), then closes it. */
export async function withStore<T>(settings: Settings, log: Logger, fn: (pool: Pool, keyring: Keyring, secrets: SecretRegistry) => Promise<T>): Promise<T> {
  const stoppers: Array<{ name: string; stop: () => Promise<void> | void }> = [];
  const secrets = new SecretRegistry();
  try {
    const { pool, keyring } = await openStore(settings, log, secrets, stoppers, { share: true });
    return await fn(pool, keyring, secrets);
  } finally {
    await stopAll(stoppers, log);
  }
}
