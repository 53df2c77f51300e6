import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { sha256 } from '../src/sync/renderer';
import { isTempName, tempPath } from '../src/sync/temp-files';
import { AtomicWriter, CONFIG_FILE, ENV_FILE, FILE_MODES, OutputDirError } from '../src/sync/writer';

describe('atomic writer', () => {
  let dir: string;
  let writer: AtomicWriter;
  const tempFiles = (): string[] => readdirSync(dir).filter((f) => f.endsWith('.tmp'));

  beforeEach(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'kp-writer-'));
    writer = new AtomicWriter(dir);
    await writer.prepare();
  });
  afterEach(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  async function write(name: string, text: string): Promise<void> {
    await writer.commit([await writer.stage(name, text, FILE_MODES[name]!)]);
  }

  it('writes 0644 config and 0600 env whatever the umask; config.yaml keeps one .bak, litellm.env none (its predecessor is returned, in memory)', async () => {
    const old = process.umask(0o077);
    try {
      await write(CONFIG_FILE, 'a: 1\n');
      await write(ENV_FILE, 'A=1\n');
    } finally {
      process.umask(old);
    }
    expect(statSync(path.join(dir, CONFIG_FILE)).mode & 0o777).toBe(0o644);
    expect(statSync(path.join(dir, ENV_FILE)).mode & 0o777).toBe(0o600);
    expect(readdirSync(dir).sort()).toEqual([CONFIG_FILE, ENV_FILE]);

    await write(ENV_FILE, 'A=2\n');
    const previous = await writer.commit([await writer.stage(ENV_FILE, 'A=3\n', 0o600)]);
    expect(readFileSync(path.join(dir, ENV_FILE), 'utf8')).toBe('A=3\n');
    expect(previous.get(ENV_FILE)?.toString('utf8')).toBe('A=2\n');
    await write(CONFIG_FILE, 'a: 2\n');
    expect(readFileSync(path.join(dir, `${CONFIG_FILE}.bak`), 'utf8')).toBe('a: 1\n');
    expect(readdirSync(dir).sort()).toEqual([CONFIG_FILE, `${CONFIG_FILE}.bak`, ENV_FILE]);
  });

  it('removes a litellm.env.bak an earlier version left, at prepare and at the next commit', async () => {
    writeFileSync(path.join(dir, `${ENV_FILE}.bak`), 'A=revoked-value-1\n');
    await writer.prepare();
    expect(existsSync(path.join(dir, `${ENV_FILE}.bak`))).toBe(false);
    writeFileSync(path.join(dir, `${ENV_FILE}.bak`), 'A=revoked-value-2\n');
    await write(CONFIG_FILE, 'a: 1\n');
    expect(existsSync(path.join(dir, `${ENV_FILE}.bak`))).toBe(false);
  });

  it('replaces the file with a new inode (rename), never truncating the old one in place', async () => {
    await write(CONFIG_FILE, 'a: 1\n');
    const before = statSync(path.join(dir, CONFIG_FILE)).ino;
    await write(CONFIG_FILE, 'a: 2\n');
    expect(statSync(path.join(dir, CONFIG_FILE)).ino).not.toBe(before);
    expect(statSync(path.join(dir, `${CONFIG_FILE}.bak`)).ino).toBe(before);
    await write(ENV_FILE, 'A=1\n');
    const envBefore = statSync(path.join(dir, ENV_FILE)).ino;
    await write(ENV_FILE, 'A=2\n');
    expect(statSync(path.join(dir, ENV_FILE)).ino).not.toBe(envBefore);
  });

  it('removes the temp file when the swap fails, and leaves the target as it was', async () => {
    // A non-empty directory where the file should go: the rename must fail.
    mkdirSync(path.join(dir, CONFIG_FILE));
    writeFileSync(path.join(dir, CONFIG_FILE, 'keep'), 'x');
    const staged = await writer.stage(CONFIG_FILE, 'a: 1\n', 0o644);
    expect(tempFiles()).toHaveLength(1);
    await expect(writer.commit([staged])).rejects.toThrow();
    expect(tempFiles()).toEqual([]);
    expect(readFileSync(path.join(dir, CONFIG_FILE, 'keep'), 'utf8')).toBe('x');
  });

  it('when the second file cannot be swapped, the first goes back: never one file from each revision', async () => {
    await write(CONFIG_FILE, 'revision: 1\n');
    // litellm.env is a directory, so its swap fails after config.yaml was already renamed.
    mkdirSync(path.join(dir, ENV_FILE));
    writeFileSync(path.join(dir, ENV_FILE, 'keep'), 'x');
    const staged = [await writer.stage(CONFIG_FILE, 'revision: 2\n', 0o644), await writer.stage(ENV_FILE, 'A=b\n', 0o600)];
    await expect(writer.commit(staged)).rejects.toThrow();
    expect(readFileSync(path.join(dir, CONFIG_FILE), 'utf8')).toBe('revision: 1\n');
    expect(tempFiles()).toEqual([]);
  });

  it('a first write whose second file fails leaves no new file behind', async () => {
    mkdirSync(path.join(dir, ENV_FILE));
    writeFileSync(path.join(dir, ENV_FILE, 'keep'), 'x');
    const staged = [await writer.stage(CONFIG_FILE, 'revision: 1\n', 0o644), await writer.stage(ENV_FILE, 'A=b\n', 0o600)];
    await expect(writer.commit(staged)).rejects.toThrow();
    expect(readdirSync(dir).sort()).toEqual([ENV_FILE]);
  });

  it('a discarded stage leaves nothing behind and the live file untouched', async () => {
    await write(ENV_FILE, 'A=1\n');
    const staged = await writer.stage(ENV_FILE, 'A=2\n', 0o600);
    await writer.discard([staged]);
    expect(tempFiles()).toEqual([]);
    expect(readFileSync(path.join(dir, ENV_FILE), 'utf8')).toBe('A=1\n');
  });

  it('restore puts the previous content back only while the live file is still the expected revision', async () => {
    await write(ENV_FILE, 'A=1\n');
    const previous = await writer.commit([await writer.stage(ENV_FILE, 'A=2\n', 0o600)]);
    expect(await writer.restore(ENV_FILE, previous.get(ENV_FILE), sha256('A=other\n'))).toBe(false);
    expect(readFileSync(path.join(dir, ENV_FILE), 'utf8')).toBe('A=2\n');
    expect(await writer.restore(ENV_FILE, previous.get(ENV_FILE), sha256('A=2\n'))).toBe(true);
    expect(readFileSync(path.join(dir, ENV_FILE), 'utf8')).toBe('A=1\n');
    expect(statSync(path.join(dir, ENV_FILE)).mode & 0o777).toBe(0o600);
    const first = await writer.commit([await writer.stage(CONFIG_FILE, 'a: 1\n', 0o644)]);
    expect(first.get(CONFIG_FILE)).toBeNull();
    expect(await writer.restore(CONFIG_FILE, first.get(CONFIG_FILE))).toBe(false);
    expect(tempFiles()).toEqual([]);
  });

  it('prepare creates a missing output directory 0755 and clears temp files a crash left', async () => {
    const nested = path.join(dir, 'a', 'litellm');
    const old = process.umask(0o077);
    try {
      await new AtomicWriter(nested).prepare();
    } finally {
      process.umask(old);
    }
    expect(statSync(nested).mode & 0o777).toBe(0o755);
    // Every temp name keyplane makes: the writer's stage and backup, and the reload rollback's,
    // also the 8-hex names older versions of the rollback used.
    const leftovers = ['.config.yaml.0123456789ab.tmp', '.litellm.env.0123456789ab.tmp', '.config.yaml.bak.0123456789ab.tmp', '.litellm.env.89abcdef.tmp', '.config.yaml.01234567.tmp'];
    for (const f of leftovers) writeFileSync(path.join(nested, f), 'half');
    const kept = ['config.yaml', 'notes.tmp', '.hidden', '.config.yaml.xyz.tmp', '.config.yaml.0123456.tmp'];
    for (const f of kept) writeFileSync(path.join(nested, f), 'keep');
    await new AtomicWriter(nested).prepare();
    expect(readdirSync(nested).sort()).toEqual([...kept].sort());
  });

  it('the temp names the writer and the reload rollback make are the ones prepare removes', () => {
    for (const name of [CONFIG_FILE, ENV_FILE, `${CONFIG_FILE}.bak`]) expect(isTempName(path.basename(tempPath(dir, name)))).toBe(true);
  });

  it('prepare refuses a path that is a file, one that cannot be created, and one that cannot be written', async () => {
    const file = path.join(dir, 'plain');
    writeFileSync(file, 'x');
    await expect(new AtomicWriter(file).prepare()).rejects.toThrow(new OutputDirError(file, 'is not a directory'));
    await expect(new AtomicWriter(path.join(file, 'sub')).prepare()).rejects.toThrow(/KEYPLANE_OUTPUT_DIR: .*plain\/sub (is missing and cannot be created|cannot be read) \(ENOTDIR\)/);
    // root ignores mode bits, so as root use a directory of a filesystem that takes no new files.
    let readOnly = '/proc/sys';
    if (process.getuid?.() !== 0) {
      readOnly = path.join(dir, 'ro');
      mkdirSync(readOnly);
      chmodSync(readOnly, 0o555);
    }
    await expect(new AtomicWriter(readOnly).prepare()).rejects.toThrow(/^KEYPLANE_OUTPUT_DIR: .* is not writable \(E[A-Z]+\)$/);
  });
});
