import { randomBytes } from 'node:crypto';
import type { Pool, PoolClient } from '../db/pool';
import { withTransaction } from '../db/pool';
import { DecryptionError, Fingerprinter, Keyring, MissingMasterKeyError, WrongMasterKeyError, type StoredJwe } from './keyring';

/** Every table that holds a secret, with how to build each row's reference (the JWE's AAD). */
export const SECRET_TABLES = [
  { table: 'platform_key_versions', keys: ['name', 'version'], ref: (r: Record<string, unknown>) => platformKeyRef(String(r.name), Number(r.version)) },
  { table: 'byok_keys', keys: ['user_sub', 'provider'], ref: (r: Record<string, unknown>) => byokRef(String(r.user_sub), String(r.provider)) },
  { table: 'keyplane_secrets', keys: ['name'], ref: (r: Record<string, unknown>) => internalRef(String(r.name)) },
] as const;

export const platformKeyRef = (name: string, version: number): string => `platform_key/${name}/v${version}`;
export const byokRef = (user: string, provider: string): string => `byok/${user}/${provider}`;
export const internalRef = (name: string): string => `keyplane/${name}`;

/**
 * Refuses to go on when the keyring cannot read the stored secrets: a key id they need is missing
 * (MissingMasterKeyError, with what to do), or a configured key has their id but is not their key
 * (WrongMasterKeyError): one secret of each key id is decrypted to tell.
 */
export async function assertKeyringCovers(pool: Pool, keyring: Keyring): Promise<void> {
  const union = SECRET_TABLES.map((t) => `SELECT DISTINCT kid FROM ${t.table}`).join(' UNION ');
  const { rows } = await pool.query<{ kid: string }>(union);
  const missing = rows.map((r) => r.kid).filter((kid) => !keyring.has(kid)).sort();
  if (missing.length) throw new MissingMasterKeyError(missing, missingKeyHint(missing, keyring));
  const wrong = new Set<string>();
  for (const t of SECRET_TABLES) {
    const sample = await pool.query<Record<string, unknown> & { jwe: StoredJwe; kid: string }>(
      `SELECT DISTINCT ON (kid) ${t.keys.join(', ')}, jwe, kid FROM ${t.table} ORDER BY kid`,
    );
    for (const row of sample.rows) {
      if (wrong.has(row.kid)) continue;
      try {
        await keyring.decrypt(row.jwe, t.ref(row));
      } catch (err) {
        if (err instanceof DecryptionError) wrong.add(row.kid);
        else throw err;
      }
    }
  }
  if (wrong.size) throw new WrongMasterKeyError([...wrong].sort(), keyring.origin.source);
}

function missingKeyHint(missing: string[], keyring: Keyring): string {
  const { origin } = keyring;
  if (origin.dev) return `keyplane is using the development key ${origin.devKeyFile ?? ''}; after \`keyplane master-key move\`, set KEYPLANE_MASTER_KEY_FILE to the file it wrote`;
  if (missing.includes('dev') && origin.devKeyFile) {
    return `they are still under the development key (${origin.devKeyFile}): unset ${origin.source.split(' ')[0]} and run \`keyplane master-key move --to FILE\`, which moves them to a new key`;
  }
  return `add the key(s) with these id(s) to ${origin.source} (its first key encrypts, all of them decrypt)`;
}

/** The fingerprint key lives encrypted in the database, made on first start, so fingerprints survive master-key rotation. */
export async function loadFingerprinter(pool: Pool, keyring: Keyring): Promise<Fingerprinter> {
  const name = 'fingerprint_key';
  const existing = await pool.query<{ jwe: StoredJwe }>('SELECT jwe FROM keyplane_secrets WHERE name = $1', [name]);
  if (existing.rows[0]) {
    return new Fingerprinter(Buffer.from(await keyring.decrypt(existing.rows[0].jwe, internalRef(name)), 'base64'));
  }
  const fresh = randomBytes(32).toString('base64');
  const { jwe, kid } = await keyring.encrypt(fresh, internalRef(name));
  await pool.query('INSERT INTO keyplane_secrets (name, jwe, kid) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING', [name, jwe, kid]);
  // Another instance may have won the race; use whatever is stored.
  return loadFingerprinter(pool, keyring);
}

/** Re-encrypts every stored secret under the keyring's first key, in one transaction. Returns how many were rewritten. */
export async function rewrapAll(pool: Pool, keyring: Keyring): Promise<{ rewrapped: number; unchanged: number }> {
  return withTransaction(pool, async (client: PoolClient) => {
    let rewrapped = 0;
    let unchanged = 0;
    for (const t of SECRET_TABLES) {
      const { rows } = await client.query<Record<string, unknown> & { jwe: StoredJwe; kid: string }>(
        `SELECT ${t.keys.join(', ')}, jwe, kid FROM ${t.table} FOR UPDATE`,
      );
      for (const row of rows) {
        if (row.kid === keyring.primaryId) {
          unchanged++;
          continue;
        }
        const ref = t.ref(row);
        const plain = await keyring.decrypt(row.jwe, ref);
        const { jwe, kid } = await keyring.encrypt(plain, ref);
        const where = t.keys.map((k, i) => `${k} = $${i + 3}`).join(' AND ');
        await client.query(`UPDATE ${t.table} SET jwe = $1, kid = $2 WHERE ${where}`, [jwe, kid, ...t.keys.map((k) => row[k])]);
        rewrapped++;
      }
    }
    return { rewrapped, unchanged };
  });
}
