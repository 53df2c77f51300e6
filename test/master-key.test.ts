import { execFile } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import { moveMasterKey, MoveRefused } from '../src/cli/master-key';
import { loadSettings } from '../src/config';
import { Keyring, WrongMasterKeyError } from '../src/crypto/keyring';
import { assertKeyringCovers } from '../src/crypto/secret-tables';
import { createLogger, SecretRegistry } from '../src/log';
import { startTestApp, type TestApp } from './helpers/app';
import { createTestDatabase, type TestDatabase } from './helpers/db';
import { startKeyplane, type Started } from './helpers/npm-start';

const run = promisify(execFile);
jest.setTimeout(120_000);
const BIN = path.resolve(__dirname, '..', 'bin', 'keyplane.js');
const quiet = createLogger({ secrets: new SecretRegistry(), silent: true });

/** The key ids of every stored secret, with how many use each. */
async function kids(pool: pg.Pool): Promise<Record<string, number>> {
  const { rows } = await pool.query<{ kid: string; n: number }>(
    `SELECT kid, count(*)::int AS n FROM (SELECT kid FROM platform_key_versions UNION ALL SELECT kid FROM byok_keys UNION ALL SELECT kid FROM keyplane_secrets) s GROUP BY kid`,
  );
  return Object.fromEntries(rows.map((r) => [r.kid, r.n]));
}

describe('master-key move, on a database (in process)', () => {
  let t: TestApp;
  let db: TestDatabase;
  const dir = mkdtempSync(path.join(os.tmpdir(), 'keyplane-move-'));
  const old = Keyring.generateSpec('old');
  beforeAll(async () => {
    db = await createTestDatabase();
    t = await startTestApp({ masterKey: old, db });
    await t.api().put('/api/v1/admin/platform-keys/openai').send({ api_key: 'sk-move-test-openai-aaaa' }).expect(200);
    await t.api().put('/api/v1/admin/platform-keys/openai').send({ api_key: 'sk-move-test-openai-bbbb' }).expect(200);
    await t.api().post('/api/v1/llm/byok/keys').send({ provider: 'groq', api_key: 'gsk_move_test_byok_cccc' }).expect(201);
    await t.close(); // nothing else may use the database while the key moves
  });
  afterAll(async () => {
    await db.drop();
    rmSync(dir, { recursive: true, force: true });
  });
  const settings = () => loadSettings({ KEYPLANE_DATABASE_URL: db.url, KEYPLANE_MASTER_KEY: old, KEYPLANE_DATA_DIR: dir });

  it('refuses while another keyplane is connected, and writes no file', async () => {
    const other = new pg.Client({ connectionString: db.url, application_name: 'keyplane:another-instance' });
    await other.connect();
    try {
      const file = path.join(dir, 'refused.key');
      await expect(moveMasterKey(settings(), quiet, { to: file }, () => undefined)).rejects.toThrow(
        /^keyplane is running on this database \(keyplane:another-instance\): stop it first; it would go on using the old key/,
      );
      expect(existsSync(file)).toBe(false);
      expect(await kids(db.pool)).toEqual({ old: 4 });
    } finally {
      await other.end();
    }
  });

  it('a move that fails changes nothing and removes the key file it wrote', async () => {
    await db.pool.query(`CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'refused for the test'; END $$`);
    await db.pool.query('CREATE TRIGGER refuse BEFORE UPDATE ON byok_keys FOR EACH ROW EXECUTE FUNCTION refuse()');
    const file = path.join(dir, 'failed.key');
    try {
      await expect(moveMasterKey(settings(), quiet, { to: file }, () => undefined)).rejects.toThrow(/refused for the test/);
    } finally {
      await db.pool.query('DROP TRIGGER refuse ON byok_keys; DROP FUNCTION refuse()');
    }
    expect(existsSync(file)).toBe(false);
    expect(await kids(db.pool)).toEqual({ old: 4 });
  });

  it('moves every secret to a new key written 0600 to the file, and says what to do next', async () => {
    const file = path.join(dir, 'master.key');
    const lines: string[] = [];
    await moveMasterKey(settings(), quiet, { to: file, id: 'prod2026' }, (l) => lines.push(l));
    expect(statSync(file).mode & 0o777).toBe(0o600);
    const spec = readFileSync(file, 'utf8').split('\n').filter((l) => l && !l.startsWith('#'));
    expect(spec).toHaveLength(1);
    expect(spec[0]).toMatch(/^prod2026:[A-Za-z0-9+/]{43}=$/);
    expect(await kids(db.pool)).toEqual({ prod2026: 4 });
    // The new key alone reads them all.
    await expect(assertKeyringCovers(db.pool, Keyring.parse(spec[0]!, new SecretRegistry()))).resolves.toBeUndefined();
    expect(lines[0]).toBe(`moved 4 stored secret(s) to the new master key prod2026, written to ${file} (mode 0600).`);
    expect(lines.join('\n')).toContain(`KEYPLANE_MASTER_KEY_FILE=${file}`);
    expect(lines.join('\n')).toMatch(/back it up/);
    expect(lines.join('\n')).toContain('remove the old key from KEYPLANE_MASTER_KEY');
    expect(lines.join('\n')).not.toContain(spec[0]!.split(':')[1]);
  });

  it('never overwrites a key file', async () => {
    const file = path.join(dir, 'master.key');
    const before = readFileSync(file, 'utf8');
    const s = loadSettings({ KEYPLANE_DATABASE_URL: db.url, KEYPLANE_MASTER_KEY_FILE: file, KEYPLANE_DATA_DIR: dir });
    await expect(moveMasterKey(s, quiet, { to: file }, () => undefined)).rejects.toThrow(new MoveRefused(`${file} exists: keyplane never overwrites a key file; give a new path`));
    expect(readFileSync(file, 'utf8')).toBe(before);
    expect(await kids(db.pool)).toEqual({ prod2026: 4 });
  });

  it('a key with the right id but other bytes: "this master key does not decrypt the stored secrets"', async () => {
    const wrong = Keyring.parse(Keyring.generateSpec('prod2026'), new SecretRegistry(), 'KEYPLANE_MASTER_KEY_FILE', { source: 'KEYPLANE_MASTER_KEY_FILE (/etc/keyplane/master.key)', dev: false });
    const err = await assertKeyringCovers(db.pool, wrong).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(WrongMasterKeyError);
    expect((err as Error).message).toBe(
      'this master key does not decrypt the stored secrets: master key id(s) prod2026 from KEYPLANE_MASTER_KEY_FILE (/etc/keyplane/master.key) are not the key(s) the secrets were encrypted with under that id; configure the original key file',
    );
  });
});

describe('systemd credentials', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'keyplane-cred-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('$CREDENTIALS_DIRECTORY/master_key is the key file when neither KEYPLANE_MASTER_KEY nor _FILE is set', () => {
    writeFileSync(path.join(dir, 'master_key'), Keyring.generateSpec('cred') + '\n', { mode: 0o600 });
    expect(loadSettings({ CREDENTIALS_DIRECTORY: dir }).masterKeyFile).toBe(path.join(dir, 'master_key'));
    expect(loadSettings({ CREDENTIALS_DIRECTORY: dir, KEYPLANE_MASTER_KEY_FILE: '/etc/k' }).masterKeyFile).toBe('/etc/k');
    expect(loadSettings({ CREDENTIALS_DIRECTORY: dir, KEYPLANE_MASTER_KEY: Keyring.generateSpec('env') }).masterKeyFile).toBeUndefined();
    expect(loadSettings({ CREDENTIALS_DIRECTORY: path.join(dir, 'none') }).masterKeyFile).toBeUndefined();
  });
});

/**
 * From the generated development key to a real one, as an operator does it with the commands, on
 * the embedded Postgres. Also what the README used to say (set KEYPLANE_MASTER_KEY to a new key),
 * which must now say what to do instead of suggesting tampering.
 */
describe('moving off the development key with the keyplane command', () => {
  const dataDir = mkdtempSync(path.join(os.tmpdir(), 'keyplane-devmove-'));
  const keyDir = mkdtempSync(path.join(os.tmpdir(), 'keyplane-devmove-keys-'));
  const file = path.join(keyDir, 'master.key');
  const token = 'devmove-test-admin-token-0123456789';
  let server: Started | undefined;
  afterEach(() => server?.kill());
  afterAll(() => {
    rmSync(dataDir, { recursive: true, force: true });
    rmSync(keyDir, { recursive: true, force: true });
  });
  /** Runs the command; resolves with its exit code and output either way. */
  const cli = (args: string[], env: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> =>
    run(process.execPath, [BIN, ...args], { env: { PATH: process.env.PATH!, KEYPLANE_DATA_DIR: dataDir, ...env } }).then(
      (r) => ({ code: 0, ...r }),
      (e: { code: number; stdout: string; stderr: string }) => e,
    );

  it('secrets stored under the development key', async () => {
    const fixtures = path.resolve(__dirname, 'fixtures', 'import');
    const res = await cli(['import', '--config', path.join(fixtures, 'config.yaml'), '--env', path.join(fixtures, 'litellm.env')]);
    expect(JSON.parse(res.stdout).keys).toHaveLength(4);
    expect(existsSync(path.join(dataDir, 'master.key'))).toBe(true);
  });

  it('a new key in KEYPLANE_MASTER_KEY (the old README): one line that says to move, no tampering suggested', async () => {
    const res = await cli(['serve'], { KEYPLANE_MASTER_KEY: Keyring.generateSpec('fresh') });
    expect(res.code).toBe(78);
    expect(res.stderr).toBe(
      `keyplane: stored secrets are encrypted under master key id(s) dev, which the configured keyring does not have: they are still under the development key (${dataDir}/master.key): unset KEYPLANE_MASTER_KEY and run \`keyplane master-key move --to FILE\`, which moves them to a new key\n`,
    );
  });

  it('master-key move --to FILE, then keyplane runs with the file alone', async () => {
    const moved = await cli(['master-key', 'move', '--to', file]);
    expect(moved.stdout).toMatch(/^moved 5 stored secret\(s\) to the new master key k\d{8}[0-9a-f]{4}, written to .* \(mode 0600\)\.$/m);
    expect(moved.stdout).toContain(`delete the development key ${dataDir}/master.key`);
    expect(statSync(file).mode & 0o777).toBe(0o600);

    // Still on the development key: it no longer reads them, and says which file to use.
    const dev = await cli(['serve']);
    expect(dev.code).toBe(78);
    expect(dev.stderr.trim().split('\n').pop()).toMatch(/^keyplane: stored secrets are encrypted under master key id\(s\) k\d+[0-9a-f]{4}, which the configured keyring does not have: keyplane is using the development key .*master\.key; after `keyplane master-key move`, set KEYPLANE_MASTER_KEY_FILE to the file it wrote$/);

    server = await startKeyplane(path.resolve(__dirname, '..'), { KEYPLANE_DATA_DIR: dataDir, KEYPLANE_MASTER_KEY_FILE: file, KEYPLANE_ADMIN_TOKEN: token }, [process.execPath, BIN, 'serve']);
    expect(server.output()).not.toMatch(/DEVELOPMENT MASTER KEY/);
    const got = await fetch(`${server.url}/api/v1/admin/platform-keys/openai/decrypted`, { headers: { Authorization: `Bearer ${token}` } });
    expect(await got.json()).toMatchObject({ api_key: 'sk-import-test-openai-bbbb' });

    // Beside the running server, a second move is refused (the server would go on with the old key).
    const again = await cli(['master-key', 'move', '--to', path.join(keyDir, 'second.key')], { KEYPLANE_MASTER_KEY_FILE: file });
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/^keyplane: keyplane is running on this database \(.*\): stop it first/);
    expect(existsSync(path.join(keyDir, 'second.key'))).toBe(false);
    process.kill(server.pid, 'SIGTERM');
    expect(await server.exited).toEqual({ code: 0, signal: null });
    server = undefined;
  });

  it('under systemd the key comes as the credential master_key (LoadCredential=master_key:FILE)', async () => {
    const creds = mkdtempSync(path.join(os.tmpdir(), 'keyplane-creds-'));
    try {
      copyFileSync(file, path.join(creds, 'master_key'));
      const res = await cli(['doctor'], { CREDENTIALS_DIRECTORY: creds });
      expect(res.stdout).toContain(`OK   master key: KEYPLANE_MASTER_KEY_FILE (${creds}/master_key): k`);
      expect(res.stdout).toMatch(/^OK   secrets: all 5 secret\(s\) decrypt \(5 under k/m);
    } finally {
      rmSync(creds, { recursive: true, force: true });
    }
  });

  it('a key file with the right id but other bytes: one line, "this master key does not decrypt the stored secrets"', async () => {
    const kid = readFileSync(file, 'utf8').split('\n').find((l) => /^k\d/.test(l))!.split(':')[0]!;
    const wrong = path.join(keyDir, 'wrong.key');
    writeFileSync(wrong, Keyring.generateSpec(kid) + '\n', { mode: 0o600 });
    const res = await cli(['serve'], { KEYPLANE_MASTER_KEY_FILE: wrong });
    expect(res.code).toBe(78);
    expect(res.stderr).toBe(
      `keyplane: this master key does not decrypt the stored secrets: master key id(s) ${kid} from KEYPLANE_MASTER_KEY_FILE (${wrong}) are not the key(s) the secrets were encrypted with under that id; configure the original key file\n`,
    );
  });
});
