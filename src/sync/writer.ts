import { constants as fsc } from 'node:fs';
import { access, chmod, copyFile, link, mkdir, open, readdir, readFile, rename, stat, unlink } from 'node:fs/promises';
import path from 'node:path';
import { sha256 } from './renderer';
import { isTempName, tempPath } from './temp-files';

export const CONFIG_FILE = 'config.yaml';
export const ENV_FILE = 'litellm.env';
export const FILE_MODES: Readonly<Record<string, number>> = { [CONFIG_FILE]: 0o644, [ENV_FILE]: 0o600 };
/**
 * Files that hold secrets get no `.bak` on disk: a revoked value must leave the disk with the render
 * that revokes it. The content they replace is handed back by commit(), kept in memory for a rollback.
 */
export const SECRET_FILES: ReadonlySet<string> = new Set([ENV_FILE]);

/** Per committed file, the bytes it replaced (null: there was none). */
export type PreviousFiles = Map<string, Buffer | null>;

/** The output directory cannot be used: the message names the setting, the directory and why. */
export class OutputDirError extends Error {
  constructor(dir: string, problem: string) {
    super(`KEYPLANE_OUTPUT_DIR: ${dir} ${problem}`);
    this.name = 'OutputDirError';
  }
}

/** A complete new file next to its target, fsynced and with its final mode, not yet in place. */
export interface StagedFile {
  name: string;
  tempPath: string;
  finalPath: string;
}

function errCode(err: unknown): string {
  return (err as NodeJS.ErrnoException).code ?? (err as Error).message;
}

async function removeQuietly(file: string): Promise<void> {
  await unlink(file).catch(() => undefined);
}

/**
 * Writes files the way consul-template does: a temp file in the same directory, fsync, chmod,
 * rename over the target, fsync of the directory. The previous file is kept as `<name>.bak`, except
 * for SECRET_FILES; a temp file never outlives a failure.
 */
export class AtomicWriter {
  constructor(readonly dir: string) {}

  path(name: string): string {
    return path.join(this.dir, name);
  }

  /**
   * Creates the directory (0755) when missing, proves it writable, and removes temp files a crash
   * left and the `.bak` of a secret file an earlier version kept.
   */
  async prepare(): Promise<void> {
    const st = await stat(this.dir).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return undefined;
      throw new OutputDirError(this.dir, `cannot be read (${errCode(err)})`);
    });
    if (st && !st.isDirectory()) throw new OutputDirError(this.dir, 'is not a directory');
    if (!st) {
      try {
        await mkdir(this.dir, { recursive: true, mode: 0o755 });
        // LiteLLM's container user must be able to enter it whatever the umask.
        await chmod(this.dir, 0o755);
      } catch (err) {
        throw new OutputDirError(this.dir, `is missing and cannot be created (${errCode(err)})`);
      }
    }
    try {
      await access(this.dir, fsc.W_OK | fsc.X_OK);
      const probe = await this.stage('.write-probe', '', 0o600);
      await removeQuietly(probe.tempPath);
    } catch (err) {
      throw new OutputDirError(this.dir, `is not writable (${errCode(err)})`);
    }
    for (const f of await readdir(this.dir)) if (isTempName(f)) await removeQuietly(path.join(this.dir, f));
    await this.removeSecretBackups();
  }

  private async removeSecretBackups(): Promise<void> {
    for (const name of SECRET_FILES) await removeQuietly(this.path(`${name}.bak`));
  }

  async read(name: string): Promise<Buffer | null> {
    try {
      return await readFile(this.path(name));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw err;
    }
  }

  /** Writes `data` to a temp file beside `name` with `mode`, fsynced; removes it again on any failure. */
  async stage(name: string, data: string | Buffer, mode: number): Promise<StagedFile> {
    const temp = tempPath(this.dir, name);
    let fh;
    try {
      fh = await open(temp, 'wx', mode);
      await fh.writeFile(data);
      await fh.sync();
      // The mode given to open() is filtered by the umask; chmod sets it exactly.
      await fh.chmod(mode);
      await fh.close();
      fh = undefined;
      return { name, tempPath: temp, finalPath: this.path(name) };
    } catch (err) {
      await fh?.close().catch(() => undefined);
      await removeQuietly(temp);
      throw err;
    }
  }

  async discard(staged: StagedFile[]): Promise<void> {
    for (const s of staged) await removeQuietly(s.tempPath);
  }

  /**
   * Puts staged files in place, each after keeping its predecessor (as `.bak` on disk, or only in
   * memory for SECRET_FILES), then fsyncs the directory, and returns the predecessors. On a failure
   * the temp files not yet renamed are removed, the files already renamed go back to what they were
   * (config.yaml and litellm.env must never be left from two revisions), and the error is rethrown.
   */
  async commit(staged: StagedFile[]): Promise<PreviousFiles> {
    const previous: PreviousFiles = new Map();
    const renamed: string[] = [];
    try {
      for (const s of staged) {
        previous.set(s.name, await this.read(s.name));
        if (!SECRET_FILES.has(s.name)) await this.backup(s.name);
        await rename(s.tempPath, s.finalPath);
        renamed.push(s.name);
      }
    } catch (err) {
      await this.discard(staged.slice(renamed.length));
      for (const name of renamed.reverse()) {
        const before = previous.get(name);
        if (before) await this.restore(name, before).catch(() => undefined);
        else await removeQuietly(this.path(name));
      }
      throw err;
    }
    await this.syncDir();
    await this.removeSecretBackups();
    return previous;
  }

  /**
   * Puts `previous` (what commit() returned for `name`) back in place of `name`, if the live file
   * still has `expectedSha256` (a newer revision is never rolled back). Returns whether it restored
   * anything; with no previous content there is nothing to restore.
   */
  async restore(name: string, previous: Buffer | null | undefined, expectedSha256?: string): Promise<boolean> {
    if (!previous) return false;
    if (expectedSha256 !== undefined) {
      const live = await this.read(name);
      if (!live || sha256(live.toString('utf8')) !== expectedSha256) return false;
    }
    const s = await this.stage(name, previous, FILE_MODES[name] ?? 0o644);
    try {
      await rename(s.tempPath, s.finalPath);
    } catch (err) {
      await this.discard([s]);
      throw err;
    }
    await this.syncDir();
    return true;
  }

  /** Keeps the current file as `.bak` without a moment where the live name is missing (hard link, then rename). */
  private async backup(name: string): Promise<void> {
    const live = this.path(name);
    const tmp = tempPath(this.dir, `${name}.bak`);
    try {
      await link(live, tmp);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') return;
      if (code !== 'EPERM' && code !== 'ENOTSUP' && code !== 'EOPNOTSUPP') throw err;
      await copyFile(live, tmp);
    }
    try {
      await rename(tmp, `${live}.bak`);
    } catch (err) {
      await removeQuietly(tmp);
      throw err;
    }
  }

  private async syncDir(): Promise<void> {
    const fh = await open(this.dir, 'r');
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
  }
}
