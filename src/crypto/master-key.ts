import { existsSync, mkdirSync, readFileSync, writeFileSync, chmodSync } from 'node:fs';
import path from 'node:path';
import type { Settings } from '../config';
import { ConfigError } from '../config';
import type { Logger, SecretRegistry } from '../log';
import { Keyring } from './keyring';

export const DEV_KEY_FILE = 'master.key';

/**
 * Where the keyring comes from: KEYPLANE_MASTER_KEY, or KEYPLANE_MASTER_KEY_FILE, or, only in
 * development (embedded Postgres, nothing configured), a key generated once into the data dir.
 */
export function resolveKeyring(settings: Settings, secrets: SecretRegistry, log: Logger): Keyring {
  const parse = (spec: string, setting: string): Keyring => {
    try {
      return Keyring.parse(spec, secrets, setting);
    } catch (err) {
      throw new ConfigError(setting, (err as Error).message.replace(`${setting}: `, ''));
    }
  };
  if (settings.masterKey) return parse(settings.masterKey, 'KEYPLANE_MASTER_KEY');
  if (settings.masterKeyFile) {
    let text: string;
    try {
      text = readFileSync(settings.masterKeyFile, 'utf8');
    } catch (err) {
      throw new ConfigError('KEYPLANE_MASTER_KEY_FILE', `cannot read ${settings.masterKeyFile}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`);
    }
    return parse(text.split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#')).join(','), 'KEYPLANE_MASTER_KEY_FILE');
  }
  if (settings.databaseUrl) {
    throw new ConfigError('KEYPLANE_MASTER_KEY', 'is required with KEYPLANE_DATABASE_URL (generate one with `keyplane master-key generate`)');
  }
  const file = path.join(settings.dataDir, DEV_KEY_FILE);
  if (!existsSync(file)) {
    mkdirSync(settings.dataDir, { recursive: true, mode: 0o700 });
    writeFileSync(file, Keyring.generateSpec('dev') + '\n', { mode: 0o600, flag: 'wx' });
  }
  chmodSync(file, 0o600);
  log.warn(
    '!!! DEVELOPMENT MASTER KEY IN USE: secrets are encrypted with a key generated into the data dir. ' +
      'Anyone who can read it can read every key. Set KEYPLANE_MASTER_KEY (keyplane master-key generate) for production. !!!',
    { file },
  );
  return parse(readFileSync(file, 'utf8').trim(), 'KEYPLANE_MASTER_KEY_FILE');
}
