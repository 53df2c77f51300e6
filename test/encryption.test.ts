import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { Keyring, MissingMasterKeyError } from '../src/crypto/keyring';
import { assertKeyringCovers, rewrapAll } from '../src/crypto/secret-tables';
import { SecretRegistry } from '../src/log';
import { startTestApp, type TestApp } from './helpers/app';
import { adminUrl } from './helpers/db';

function listFiles(dir: string): string[] {
  try {
    return readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? listFiles(path.join(dir, e.name)) : [path.join(dir, e.name)]));
  } catch {
    return [];
  }
}

const SECRET_A = 'sk-ant-api03-SECRETVALUEAAAAAAAAAAAAAA';
const SECRET_B = 'sk-or-v1-SECRETVALUEBBBBBBBBBBBBBBBBBB';

describe('encryption at rest', () => {
  let t: TestApp;
  let rotatedSpec = '';
  beforeAll(async () => {
    t = await startTestApp();
    await t.api().put('/api/v1/admin/platform-keys/anthropic').send({ api_key: SECRET_A }).expect(200);
    await t.api().put('/api/v1/admin/platform-keys/openrouter').send({ api_key: SECRET_B }).expect(200);
    await t.api().put('/api/v1/admin/platform-keys/openrouter').send({ api_key: SECRET_A + 'X' }).expect(200);
    await t.api().post('/api/v1/llm/byok/keys').send({ provider: 'groq', api_key: SECRET_B + 'BYOK' }).expect(201);
  });
  afterAll(async () => {
    await t.close();
  });

  it('a plain SELECT of every table shows no secret', async () => {
    const { rows: tables } = await t.db.pool.query<{ tablename: string }>("SELECT tablename FROM pg_tables WHERE schemaname = 'public'");
    expect(tables.length).toBeGreaterThan(5);
    for (const { tablename } of tables) {
      const { rows } = await t.db.pool.query(`SELECT * FROM ${tablename}`);
      const dump = JSON.stringify(rows);
      for (const s of [SECRET_A, SECRET_B, 'SECRETVALUE']) expect([tablename, dump.includes(s)]).toEqual([tablename, false]);
    }
  });

  it("Postgres's data files (this database, and the WAL) show no secret", async () => {
    await t.db.pool.query('CHECKPOINT');
    const { rows } = await t.db.pool.query<{ dir: string; oid: number }>(
      "SELECT current_setting('data_directory') AS dir, (SELECT oid FROM pg_database WHERE datname = current_database()) AS oid",
    );
    const { dir, oid } = rows[0]!;
    const files = [...listFiles(path.join(dir, 'base', String(oid))), ...listFiles(path.join(dir, 'pg_wal'))];
    expect(files.length).toBeGreaterThan(10);
    let scanned = 0;
    let control = false;
    for (const f of files) {
      let bytes: Buffer;
      try {
        bytes = readFileSync(f);
      } catch {
        continue; // other test files' databases and WAL segments come and go while this runs
      }
      scanned += bytes.length;
      // Control: plain columns (the env var name) are found, so the scan does read the rows.
      control ||= bytes.includes('ANTHROPIC_API_KEY');
      for (const needle of [SECRET_A, SECRET_B, 'SECRETVALUE']) expect([f, bytes.includes(needle)]).toEqual([f, false]);
    }
    // The WAL holds this file's writes: the scan must have covered real data, not empty dirs.
    expect(scanned).toBeGreaterThan(1024 * 1024);
    expect(control).toBe(true);
  });

  it('each secret is a JWE (dir + A256GCM) with the master key id', async () => {
    const { rows } = await t.db.pool.query('SELECT jwe, kid FROM platform_key_versions');
    expect(rows).toHaveLength(3);
    for (const r of rows) {
      const header = JSON.parse(Buffer.from(r.jwe.protected, 'base64url').toString());
      expect(header).toEqual({ alg: 'dir', enc: 'A256GCM', kid: 'test' });
      expect(r.kid).toBe('test');
      expect(r.jwe.aad).toBeUndefined();
    }
  });

  it('a ciphertext copied onto another row does not decrypt', async () => {
    await t.db.pool.query(
      `UPDATE platform_key_versions SET jwe = (SELECT jwe FROM platform_key_versions WHERE name = 'anthropic' AND version = 1)
       WHERE name = 'openrouter' AND version = 2`,
    );
    const res = await t.api().get('/api/v1/admin/platform-keys/openrouter/decrypted').expect(500);
    expect(JSON.stringify(res.body)).not.toContain(SECRET_A);
    expect(t.logs()).toMatch(/does not decrypt/);
    // Same for an older version of the same key (the version is bound too).
    await t.db.pool.query(
      `UPDATE platform_key_versions SET jwe = (SELECT jwe FROM platform_key_versions WHERE name = 'openrouter' AND version = 1)
       WHERE name = 'openrouter' AND version = 2`,
    );
    await t.api().get('/api/v1/admin/platform-keys/openrouter/decrypted').expect(500);
    await t.api().post('/api/v1/admin/platform-keys/openrouter/rollback').send({ version: 1 }).expect(200);
    const ok = await t.api().get('/api/v1/admin/platform-keys/openrouter/decrypted').expect(200);
    expect(ok.body.api_key).toBe(SECRET_B);
    // A tampered row would (rightly) stop the rotation below; remove it.
    await t.db.pool.query(`DELETE FROM platform_key_versions WHERE name = 'openrouter' AND version = 2`);
  });

  it('master-key rotation re-encrypts everything under the first key in one go, and the old key can then go', async () => {
    const secrets = new SecretRegistry();
    const old = Keyring.parse(t.masterKey, secrets);
    const newSpec = Keyring.generateSpec('next');
    rotatedSpec = newSpec;
    const both = Keyring.parse(`${newSpec},${t.masterKey}`, secrets);
    const r = await rewrapAll(t.db.pool, both);
    const { rows } = await t.db.pool.query<{ n: number }>(
      'SELECT (SELECT count(*) FROM platform_key_versions) + (SELECT count(*) FROM byok_keys) + (SELECT count(*) FROM keyplane_secrets) AS n',
    );
    expect(r.rewrapped).toBe(rows[0]!.n);
    const again = await rewrapAll(t.db.pool, both);
    expect(again).toEqual({ rewrapped: 0, unchanged: rows[0]!.n });
    const onlyNew = Keyring.parse(newSpec, secrets);
    await expect(assertKeyringCovers(t.db.pool, onlyNew)).resolves.toBeUndefined();
    await expect(assertKeyringCovers(t.db.pool, old)).rejects.toThrow(MissingMasterKeyError);
    await expect(assertKeyringCovers(t.db.pool, old)).rejects.toThrow(/next/);
  });

  it('a start with a keyring missing a stored key id stops and names the id', async () => {
    const { startTestApp: start } = await import('./helpers/app');
    await expect(start({ db: t.db, masterKey: Keyring.generateSpec('other') })).rejects.toThrow(/next/);
    expect(adminUrl()).toBeTruthy();
  });

  it('a rotation that meets a secret it cannot decrypt changes nothing at all', async () => {
    const secrets = new SecretRegistry();
    const { rows: before } = await t.db.pool.query('SELECT name, version, kid, jwe FROM platform_key_versions ORDER BY name, version');
    await t.db.pool.query("INSERT INTO platform_key_versions (name, version, jwe, kid, fingerprint, last4, created_by) SELECT name, 99, jwe, kid, fingerprint, last4, 'test' FROM platform_key_versions WHERE name = 'anthropic' AND version = 1");
    const third = Keyring.parse(`${Keyring.generateSpec('third')},${rotatedSpec}`, secrets);
    await expect(rewrapAll(t.db.pool, third)).rejects.toThrow(/platform_key\/anthropic\/v99 does not decrypt/);
    const { rows: after } = await t.db.pool.query("SELECT name, version, kid, jwe FROM platform_key_versions WHERE version <> 99 ORDER BY name, version");
    expect(after).toEqual(before);
  });
});
