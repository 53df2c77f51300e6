import { promises as fs } from 'node:fs';
import path from 'node:path';
import type { Logger } from '../log';
import { tempPath } from '../sync/temp-files';
import type { ReloadRequest } from './reloader';

type Snapshot = Map<string, { bytes: Buffer; mode: number } | null>;

/**
 * Lets a reload that rolled the files back be retried. A reloader that fails puts the previous
 * files back (`restorePrevious`); before the next try the revision's own files must be on disk
 * again, or a restart would come back up with the old files and look like a success.
 *
 * The first rollback records the revision's files and the previous ones; a retry writes the
 * revision's files back, but only while the disk still holds exactly the previous ones (a newer
 * revision written meanwhile wins). When `superseded()` says a newer revision is waiting, a
 * rollback leaves the files alone: they already belong to the newer revision.
 */
export class FileRollback {
  private mine: Snapshot | undefined;
  private previous: Snapshot | undefined;
  private rolledBack = false;
  readonly request: ReloadRequest;

  constructor(private readonly req: ReloadRequest, private readonly superseded: () => boolean, private readonly log: Logger) {
    this.request = { ...req, restorePrevious: () => this.restorePrevious() };
  }

  private get files(): string[] {
    return [this.req.configPath, this.req.envPath];
  }

  private async restorePrevious(): Promise<boolean> {
    if (this.superseded()) {
      this.log.info('not restoring the previous files: a newer revision is waiting', { revision: this.req.revision });
      return false;
    }
    if (this.rolledBack) return true;
    if (!this.mine) {
      const mine = await snapshot(this.files);
      if (!(await this.req.restorePrevious())) return false;
      this.mine = mine;
      this.previous = await snapshot(this.files);
    } else {
      if (!this.previous || !sameSnapshot(await snapshot(this.files), this.mine)) return false;
      await writeSnapshot(this.previous);
    }
    this.rolledBack = true;
    return true;
  }

  /** Before a retry: puts the revision's files back if a rollback took them away. Returns whether it did. */
  async reapply(): Promise<boolean> {
    if (!this.rolledBack || !this.mine || !this.previous) return false;
    if (!sameSnapshot(await snapshot(this.files), this.previous)) {
      this.log.warn('not re-applying the files for a retry: they changed since the rollback', { revision: this.req.revision });
      return false;
    }
    await writeSnapshot(this.mine);
    this.rolledBack = false;
    return true;
  }
}

async function snapshot(files: string[]): Promise<Snapshot> {
  const out: Snapshot = new Map();
  for (const f of files) {
    try {
      const [bytes, st] = await Promise.all([fs.readFile(f), fs.stat(f)]);
      out.set(f, { bytes, mode: st.mode & 0o777 });
    } catch (err) {
      if ((err as { code?: string }).code !== 'ENOENT') throw err;
      out.set(f, null);
    }
  }
  return out;
}

function sameSnapshot(a: Snapshot, b: Snapshot): boolean {
  for (const [f, x] of a) {
    const y = b.get(f);
    if (x === null || y === null || y === undefined) {
      if (x !== y) return false;
    } else if (!x.bytes.equals(y.bytes)) return false;
  }
  return true;
}

/** Same discipline (and temp names) as the writer: temp file in the directory, fsync, chmod, rename, fsync the directory. */
async function writeSnapshot(s: Snapshot): Promise<void> {
  for (const [file, content] of s) {
    if (content === null) {
      await fs.rm(file, { force: true });
      continue;
    }
    const tmp = tempPath(path.dirname(file), path.basename(file));
    try {
      const fh = await fs.open(tmp, 'wx', content.mode);
      try {
        await fh.writeFile(content.bytes);
        await fh.chmod(content.mode);
        await fh.sync();
      } finally {
        await fh.close();
      }
      await fs.rename(tmp, file);
    } catch (err) {
      await fs.rm(tmp, { force: true });
      throw err;
    }
    const dir = await fs.open(path.dirname(file), 'r');
    try {
      await dir.sync();
    } finally {
      await dir.close();
    }
  }
}
