import { randomBytes } from 'node:crypto';
import { constants as fsc } from 'node:fs';
import { access, chmod, copyFile, link, mkdir, open, readdir, readFile, rename, stat, unlink } from 'node:fs/promises';
import path from 'node:path';
import { sha256 } from './renderer';

export const CONFIG_FILE = 'config.yaml';
export const ENV_FILE = 'litellm.env';
export const FILE_MODES: Readonly<Record<string, number>> = { [CONFIG_FILE]: 0o644, [ENV_FILE]: 0o600 };

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

const TEMP = /^\..+\.[0-9a-f]{12}\.tmp$/;

function errCode(err: unknown): string {
  return (err as NodeJS.ErrnoException).code ?? (err as Error).message;
}

async function removeQuietly(file: string): Promise<void> {
  await unlink(file).catch(() => undefined);
}

/**
 * Writes files the way consul-template does: a temp file in the same directory, fsync, chmod,
 * rename over the target, fsync of the directory. The previous file is kept as `<name>.bak`;
 * a temp file never outlives a failure.
 */
export class AtomicWriter {
  constructor(readonly dir: string) {}

  path(name: string): string {
    return path.join(this.dir, name);
  }

  /** Creates the directory (0755) when missing, proves it writable, and removes temp files a crash left. */
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
    for (const f of await readdir(this.dir)) if (TEMP.test(f)) await removeQuietly(path.join(this.dir, f));
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
    const tempPath = path.join(this.dir, `.${name}.${randomBytes(6).toString('hex')}.tmp`);
    let fh;
    try {
      fh = await open(tempPath, 'wx', mode);
      await fh.writeFile(data);
      await fh.sync();
      // The mode given to open() is filtered by the umask; chmod sets it exactly.
      await fh.chmod(mode);
      await fh.close();
      fh = undefined;
      return { name, tempPath, finalPath: this.path(name) };
    } catch (err) {
      await fh?.close().catch(() => undefined);
      await removeQuietly(tempPath);
      throw err;
    }
  }

  async discard(staged: StagedFile[]): Promise<void> {
    for (const s of staged) await removeQuietly(s.tempPath);
  }

  /**
   * Puts staged files in place, each after keeping its predecessor as `.bak`, then fsyncs the
   * directory. On a failure the temp files not yet renamed are removed, the files already renamed
   * go back to what they were (config.yaml and litellm.env must never be left from two revisions),
   * and the error is rethrown.
   */
  async commit(staged: StagedFile[]): Promise<void> {
    const renamed: Array<{ name: string; hadPredecessor: boolean }> = [];
    try {
      for (const s of staged) {
        const hadPredecessor = await this.backup(s.name);
        await rename(s.tempPath, s.finalPath);
        renamed.push({ name: s.name, hadPredecessor });
      }
    } catch (err) {
      await this.discard(staged.slice(renamed.length));
      for (const r of renamed.reverse()) {
        if (r.hadPredecessor) await this.restore(r.name).catch(() => undefined);
        else await removeQuietly(this.path(r.name));
      }
      throw err;
    }
    await this.syncDir();
  }

  /**
   * Puts `<name>.bak` back in place of `name`, if the live file still has `expectedSha256` (a newer
   * revision is never rolled back). The `.bak` stays. Returns whether it restored anything.
   */
  async restore(name: string, expectedSha256?: string): Promise<boolean> {
    const bak = await this.read(`${name}.bak`);
    if (!bak) return false;
    if (expectedSha256 !== undefined) {
      const live = await this.read(name);
      if (!live || sha256(live.toString('utf8')) !== expectedSha256) return false;
    }
    const s = await this.stage(name, bak, FILE_MODES[name] ?? 0o644);
    try {
      await rename(s.tempPath, s.finalPath);
    } catch (err) {
      await this.discard([s]);
      throw err;
    }
    await this.syncDir();
    return true;
  }

  /** Keeps the current file as `.bak` without a moment where the live name is missing (hard link, then rename); false when there was none. */
  private async backup(name: string): Promise<boolean> {
    const live = this.path(name);
    const tmp = path.join(this.dir, `.${name}.bak.${randomBytes(6).toString('hex')}.tmp`);
    try {
      await link(live, tmp);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') return false;
      if (code !== 'EPERM' && code !== 'ENOTSUP' && code !== 'EOPNOTSUPP') throw err;
      await copyFile(live, tmp);
    }
    try {
      await rename(tmp, `${live}.bak`);
    } catch (err) {
      await removeQuietly(tmp);
      throw err;
    }
    return true;
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
