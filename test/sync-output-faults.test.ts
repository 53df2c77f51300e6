import { execFileSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { PlatformKeysService } from '../src/features/platform-keys/platform-keys-service';
import { createTestDatabase, type TestDatabase } from './helpers/db';
import { captureLog, envLine, keyService, keyValue, syncInstance, TEST_CTX, type SyncInstance } from './helpers/sync';

/**
 * The output directory on a real, small tmpfs (tests run as root, here and in CI; a test that
 * cannot mount fails): full, then read-only. The live files stay as they were, the sync status says
 * why, and the first render after the fault writes the right files.
 */
describe('output directory faults on a real filesystem', () => {
  let db: TestDatabase;
  let keys: PlatformKeysService;
  let mnt: string;
  let inst: SyncInstance;
  const logs = captureLog();

  const live = (): { config: string; env: string } => ({
    config: readFileSync(path.join(mnt, 'config.yaml'), 'utf8'),
    env: readFileSync(path.join(mnt, 'litellm.env'), 'utf8'),
  });

  beforeAll(async () => {
    db = await createTestDatabase();
    keys = keyService(db.pool, logs.secrets);
    await keys.put('openai', { api_key: keyValue() }, TEST_CTX);
    mnt = mkdtempSync(path.join(os.tmpdir(), 'kp-tmpfs-'));
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64k,mode=0755', 'tmpfs', mnt]);
    inst = syncInstance(db.url, db.pool, keys, { logs, env: { KEYPLANE_OUTPUT_DIR: mnt } });
    await inst.runtime.start();
  });
  afterAll(async () => {
    await inst?.runtime.stop();
    execFileSync('umount', [mnt]);
    rmSync(mnt, { recursive: true, force: true });
    rmSync(inst.dir, { recursive: true, force: true });
    await db.drop();
  });

  async function failedRender(): Promise<{ value: string; message: string }> {
    const failed = inst.events.waitFor('render:failed');
    const value = keyValue('sk-during-fault');
    await keys.put('openai', { api_key: value }, TEST_CTX);
    return { value, message: (await failed).message };
  }

  it('a full filesystem: the render fails at write, the files are untouched, and the next render after space is freed writes them', async () => {
    const before = live();
    const filler = path.join(mnt, 'filler');
    const fd = openSync(filler, 'w');
    try {
      for (;;) writeSync(fd, Buffer.alloc(4096, 1));
    } catch (err) {
      expect((err as NodeJS.ErrnoException).code).toBe('ENOSPC');
    } finally {
      closeSync(fd);
    }
    const { value, message } = await failedRender();
    expect(message).toMatch(/^staging the files failed: ENOSPC: no space left on device/);
    expect(live()).toEqual(before);
    expect(readdirSync(mnt).sort()).toEqual(['config.yaml', 'filler', 'litellm.env']);
    expect((await inst.runtime.syncer.status()).last_render).toMatchObject({ status: 'failed', error: { stage: 'write', message } });
    expect(logs.text()).not.toContain(value);

    rmSync(filler);
    expect(await inst.runtime.syncer.syncNow()).toMatchObject({ status: 'changed', result: { changedFiles: ['litellm.env'] } });
    expect(envLine(live().env, 'OPENAI_API_KEY')).toBe(value);
    expect((await inst.runtime.syncer.status()).last_render).toMatchObject({ status: 'changed', error: null });
  });

  it('a swap that fails after the revision was recorded: the revision and its wish to reload are dropped again', async () => {
    const wish = async () => (await db.pool.query('SELECT reload_wanted FROM sync_state WHERE id = 1')).rows[0].reload_wanted as number;
    const revisions = async () => (await db.pool.query('SELECT revision FROM sync_revisions ORDER BY revision')).rows.map((r) => Number(r.revision));
    const [wishBefore, revsBefore] = [await wish(), await revisions()];
    // A mount point where litellm.env is: it reads and stages fine, but nothing can be renamed over it.
    const pinned = path.join(inst.dir, 'pinned.env');
    writeFileSync(pinned, live().env);
    execFileSync('mount', ['--bind', pinned, path.join(mnt, 'litellm.env')]);
    let message: string;
    try {
      ({ message } = await failedRender());
      expect(live().env).toBe(readFileSync(pinned, 'utf8'));
    } finally {
      execFileSync('umount', [path.join(mnt, 'litellm.env')]);
    }
    expect(message).toMatch(/^writing the files failed: EBUSY/);
    expect(await revisions()).toEqual(revsBefore);
    expect(await wish()).toBe(wishBefore);
    expect(readdirSync(mnt).sort()).toEqual(['config.yaml', 'litellm.env']);
    const next = await inst.runtime.syncer.syncNow();
    expect(next).toMatchObject({ status: 'changed' });
    // The dropped revision had taken its number before the swap was tried.
    expect(await revisions()).toEqual([...revsBefore, revsBefore[revsBefore.length - 1]! + 2]);
    expect(await wish()).toBe(wishBefore + 1);
  });

  it('a read-only filesystem: the same, and writing resumes once it is writable again', async () => {
    const before = live();
    execFileSync('mount', ['-o', 'remount,ro', mnt]);
    let value: string;
    try {
      const failure = await failedRender();
      value = failure.value;
      expect(failure.message).toMatch(/^staging the files failed: EROFS: read-only file system/);
      expect(live()).toEqual(before);
      expect((await inst.runtime.syncer.status()).last_render).toMatchObject({ status: 'failed', error: { stage: 'write', message: failure.message } });
    } finally {
      execFileSync('mount', ['-o', 'remount,rw', mnt]);
    }
    expect(await inst.runtime.syncer.syncNow()).toMatchObject({ status: 'changed' });
    expect(envLine(live().env, 'OPENAI_API_KEY')).toBe(value);
    expect(readdirSync(mnt).sort()).toEqual(['config.yaml', 'litellm.env']);
  });
});
