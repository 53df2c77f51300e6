import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { Settings } from '../config';
import { ConfigError } from '../config';
import type { Logger, SecretRegistry } from '../log';
import { Keyring, type KeyringOrigin } from './keyring';

export const DEV_KEY_FILE = 'master.key';

/** A key file's entries: one `id:base64` per line (or comma-separated); blank lines and `#` comments are skipped. */
export function keyFileSpec(text: string): string {
  return text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'))
    .join(',');
}

/**
 * Where the keyring comes from: KEYPLANE_MASTER_KEY, or KEYPLANE_MASTER_KEY_FILE (which systemd's
 * credential `master_key` also sets, see config.ts), or, only in development (embedded Postgres,
 * nothing configured), a key generated once into the data dir. `create: false` (doctor) never
 * generates that key: its absence is an error.
 */
export function resolveKeyring(settings: Settings, secrets: SecretRegistry, log: Logger, opts: { create?: boolean } = {}): Keyring {
  const devKeyFile = path.join(settings.dataDir, DEV_KEY_FILE);
  const parse = (spec: string, setting: string, origin: KeyringOrigin): Keyring => {
    try {
      return Keyring.parse(spec, secrets, setting, origin);
    } catch (err) {
      throw new ConfigError(setting, (err as Error).message.replace(`${setting}: `, ''));
    }
  };
  if (settings.masterKey) return parse(settings.masterKey, 'KEYPLANE_MASTER_KEY', { source: 'KEYPLANE_MASTER_KEY', dev: false, devKeyFile });
  if (settings.masterKeyFile) {
    let text: string;
    try {
      text = readFileSync(settings.masterKeyFile, 'utf8');
    } catch (err) {
      throw new ConfigError('KEYPLANE_MASTER_KEY_FILE', `cannot read ${settings.masterKeyFile}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`);
    }
    return parse(keyFileSpec(text), 'KEYPLANE_MASTER_KEY_FILE', { source: `KEYPLANE_MASTER_KEY_FILE (${settings.masterKeyFile})`, dev: false, devKeyFile });
  }
  if (settings.databaseUrl) {
    throw new ConfigError('KEYPLANE_MASTER_KEY', 'is required with KEYPLANE_DATABASE_URL (generate one with `keyplane master-key generate`)');
  }
  if (!existsSync(devKeyFile)) {
    if (opts.create === false) throw new ConfigError('KEYPLANE_MASTER_KEY', `is not set, and there is no development key ${devKeyFile} yet`);
    mkdirSync(settings.dataDir, { recursive: true, mode: 0o700 });
    writeFileSync(devKeyFile, Keyring.generateSpec('dev') + '\n', { mode: 0o600, flag: 'wx' });
  }
  if (opts.create !== false) chmodSync(devKeyFile, 0o600);
  log.warn(
    '!!! DEVELOPMENT MASTER KEY IN USE: secrets are encrypted with a key generated into the data dir. ' +
      'Anyone who can read it can read every key. Move to a real key with `keyplane master-key move --to FILE`. !!!',
    { file: devKeyFile },
  );
  return parse(readFileSync(devKeyFile, 'utf8').trim(), 'KEYPLANE_MASTER_KEY_FILE', { source: `the development key ${devKeyFile}`, dev: true, devKeyFile });
}
