import { closeSync, existsSync, fsyncSync, openSync, statSync, unlinkSync, writeSync } from 'node:fs';
import path from 'node:path';
import type { Settings } from '../config';
import { Keyring } from '../crypto/keyring';
import { rewrapAll } from '../crypto/secret-tables';
import { CommitOutcomeUnknown, type Pool } from '../db/pool';
import type { Logger } from '../log';
import { withStore } from './store';

export class MoveRefused extends Error {}

/** Connections of other keyplane processes (servers, their LISTEN and leader sessions, other commands) to this database. */
async function otherKeyplanes(pool: Pool, instanceId: string): Promise<string[]> {
  const { rows } = await pool.query<{ application_name: string }>(
    `SELECT DISTINCT application_name FROM pg_stat_activity
      WHERE datname = current_database() AND pid <> pg_backend_pid()
        AND application_name ~ '^keyplane(-leader|-watch)?:' AND application_name <> $1`,
    [`keyplane:${instanceId}`.slice(0, 63)],
  );
  return rows.map((r) => r.application_name).sort();
}

/** Writes a new key file: never over an existing file, 0600, on disk (file and directory synced) before anything uses it. */
function writeKeyFile(file: string, spec: string): void {
  const fd = openSync(file, 'wx', 0o600);
  try {
    writeSync(fd, `# keyplane master key, written by \`keyplane master-key move\` on ${new Date().toISOString()}.\n# Keep it secret and back it up: without it the stored keys cannot be read.\n${spec}\n`);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  const dir = openSync(path.dirname(file), 'r');
  try {
    fsyncSync(dir);
  } finally {
    closeSync(dir);
  }
}

/**
 * `keyplane master-key move --to FILE [--id ID]`: from the keyring in use (typically the generated
 * development key) to a new key written to FILE. Every stored secret is re-encrypted under the new
 * key in one transaction, decrypted with the old one. The file is written first: a failed move
 * leaves the secrets under the old key (and removes the unused file); a move whose commit outcome
 * is unknown keeps the file, since the secrets may be under it.
 */
export async function moveMasterKey(settings: Settings, log: Logger, opts: { to: string; id?: string }, out: (line: string) => void): Promise<void> {
  const file = path.resolve(opts.to);
  if (existsSync(file)) throw new MoveRefused(`${file} exists: keyplane never overwrites a key file; give a new path`);
  if (!existsSync(path.dirname(file)) || !statSync(path.dirname(file)).isDirectory()) throw new MoveRefused(`${path.dirname(file)} is not a directory`);
  const r = await withStore(settings, log, async (pool, keyring, secrets) => {
    const others = await otherKeyplanes(pool, settings.instanceId);
    if (others.length) {
      throw new MoveRefused(
        `keyplane is running on this database (${others.join(', ')}): stop it first; it would go on using the old key. Then move, and start it with KEYPLANE_MASTER_KEY_FILE=${file}`,
      );
    }
    const fresh = Keyring.parse(Keyring.generateSpec(opts.id), secrets, '--id');
    const key = fresh.keys[0]!;
    if (keyring.has(key.id)) throw new MoveRefused(`the keyring already has a key with id ${key.id}: choose another --id`);
    writeKeyFile(file, `${key.id}:${Buffer.from(key.key).toString('base64')}`);
    try {
      const moved = await rewrapAll(pool, new Keyring([key, ...keyring.keys], secrets));
      return { ...moved, kid: key.id, from: keyring.origin };
    } catch (err) {
      if (!(err instanceof CommitOutcomeUnknown)) unlinkSync(file);
      throw err;
    }
  });
  out(`moved ${r.rewrapped + r.unchanged} stored secret(s) to the new master key ${r.kid}, written to ${file} (mode 0600).`);
  out('next:');
  out(`  1. run keyplane with KEYPLANE_MASTER_KEY_FILE=${file} (systemd: LoadCredential=master_key:${file}; compose: the master_key secret).`);
  out('  2. keep the file secret, and back it up now, away from this host: without it the stored keys cannot be read.');
  out(
    r.from.dev
      ? `  3. once keyplane runs with it (keyplane doctor says OK), delete the development key ${r.from.devKeyFile ?? ''}.`
      : `  3. once keyplane runs with it (keyplane doctor says OK), remove the old key from ${r.from.source}.`,
  );
}
