import { existsSync, mkdtempSync, readFileSync, readlinkSync, realpathSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { allGone, alive, processes, ROOT, signal, startKeyplane, tree, type Started } from './helpers/npm-start';

// Each test starts `npm start` on the embedded Postgres (initdb once, in the first) and stops it.
jest.setTimeout(180_000);

/**
 * `npm start` stopped every usual way: each must stop keyplane and its Postgres, cleanly (Postgres
 * removes its postmaster.pid only on a clean shutdown), and leave no process behind.
 */
describe('stopping npm start', () => {
  const dataDir = mkdtempSync(path.join(os.tmpdir(), 'keyplane-stop-'));
  const pgDir = path.join(dataDir, 'pg');
  const pidFile = path.join(pgDir, 'postmaster.pid');
  const env = { KEYPLANE_DATA_DIR: dataDir };
  let current: Started | undefined;

  afterEach(() => current?.kill());
  afterAll(() => rmSync(dataDir, { recursive: true, force: true }));

  const postmaster = (): number => Number(readFileSync(pidFile, 'utf8').split('\n')[0]);

  /** Processes working in the cluster's directory: the postmaster and every backend. */
  const onCluster = (): number[] => {
    const real = realpathSync(pgDir);
    return processes()
      .filter((p) => {
        try {
          return readlinkSync(`/proc/${p.pid}/cwd`) === real;
        } catch {
          return false;
        }
      })
      .map((p) => p.pid);
  };

  async function start(): Promise<{ s: Started; pids: number[]; pm: number; node: number }> {
    const s = await startKeyplane(ROOT, env);
    current = s;
    const pids = tree(s.pid);
    const pm = postmaster();
    expect(pids).toContain(pm);
    return { s, pids, pm, node: s.keyplanePid() };
  }

  async function expectStoppedCleanly(pids: number[]): Promise<void> {
    await allGone(pids, 30_000);
    expect(onCluster()).toEqual([]);
    expect(existsSync(pidFile)).toBe(false);
  }

  it('Ctrl-C: SIGINT to the process group', async () => {
    const { s, pids } = await start();
    signal(-s.pid, 'SIGINT');
    expect(await s.exited).toEqual({ code: 0, signal: null });
    await expectStoppedCleanly(pids);
    expect(s.output()).toMatch(/"signal":"SIGINT"/);
  });

  it('SIGTERM to npm', async () => {
    const { s, pids } = await start();
    signal(s.pid, 'SIGTERM');
    expect(await s.exited).toEqual({ code: 0, signal: null });
    await expectStoppedCleanly(pids);
  });

  it('SIGTERM to node', async () => {
    const { s, pids, node } = await start();
    expect(node).not.toBe(s.pid);
    signal(node, 'SIGTERM');
    expect(await s.exited).toEqual({ code: 0, signal: null });
    await expectStoppedCleanly(pids);
  });

  it('a closed terminal: SIGHUP to the process group', async () => {
    const { s, pids } = await start();
    signal(-s.pid, 'SIGHUP');
    await s.exited; // npm itself dies of the SIGHUP; keyplane stops on its own
    await expectStoppedCleanly(pids);
    expect(s.output()).toMatch(/"signal":"SIGHUP"/);
  });

  it('systemctl stop: SIGTERM to every process of the unit at once (KillMode=control-group)', async () => {
    const { s, pids } = await start();
    for (const p of pids) signal(p, 'SIGTERM');
    expect(await s.exited).toEqual({ code: 0, signal: null });
    await expectStoppedCleanly(pids);
  });

  it('docker stop: SIGTERM to the main process (through init), all stopped within docker\'s 10 s grace', async () => {
    const { s, pids } = await start();
    signal(s.pid, 'SIGTERM');
    // Docker would SIGKILL whatever is left after 10 s: a clean stop must be done before.
    await allGone(pids, 10_000);
    expect(await s.exited).toEqual({ code: 0, signal: null });
    await expectStoppedCleanly(pids);
  });

  it('a stop while it is still starting stops everything it started', async () => {
    // As soon as its Postgres runs: the stop lands during migrations, the listen or the sync start.
    // initdb's bootstrap backend also writes postmaster.pid (on a fresh cluster): wait for the one
    // whose parent is keyplane's node.
    const parentOf = (pid: number): number => Number(readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ')[1]);
    const isKeyplane = (pid: number): boolean => {
      try {
        return readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('keyplane.js');
      } catch {
        return false;
      }
    };
    // On a slow moment keyplane can be ready before the signal lands: that try must stop cleanly too,
    // and another is made, until one stop lands while it starts.
    let landedWhileStarting = 0;
    for (let attempt = 1; attempt <= 5 && landedWhileStarting === 0; attempt++) {
      const s = startKeyplane(ROOT, env);
      s.then((started) => (current = started), () => undefined);
      const deadline = Date.now() + 60_000;
      let node = 0;
      while (Date.now() < deadline) {
        try {
          if (existsSync(pidFile) && isKeyplane(parentOf(postmaster()))) {
            node = parentOf(postmaster());
            break;
          }
        } catch {
          // The pid file is being written, or its process just ended.
        }
        await new Promise((r) => setTimeout(r, 10));
      }
      expect(node).toBeGreaterThan(0);
      const pids = tree(node);
      signal(node, 'SIGTERM');
      const outcome = await s.then(
        () => 'ready first',
        (err: Error) => err.message,
      );
      if (outcome !== 'ready first') {
        expect(outcome).toMatch(/exited \(0\) before it was ready|stopped by SIGTERM while starting/);
        landedWhileStarting = attempt;
      }
      await expectStoppedCleanly(pids);
      current = undefined;
    }
    expect(landedWhileStarting).toBeGreaterThan(0);
  });

  it('SIGKILL leaves Postgres running; the next start stops that orphan and starts cleanly', async () => {
    const first = await start();
    signal(first.node, 'SIGKILL');
    await first.s.exited;
    await allGone([first.node], 10_000);
    expect(alive(first.pm)).toBe(true); // an orphan now
    current = undefined;

    const second = await start();
    expect(second.pm).not.toBe(first.pm);
    expect(alive(first.pm)).toBe(false);
    expect(second.s.output()).toMatch(new RegExp(`stopping the embedded Postgres left running by a keyplane that is gone.*"pid":${first.pm}`));
    signal(second.s.pid, 'SIGTERM');
    expect(await second.s.exited).toEqual({ code: 0, signal: null });
    await expectStoppedCleanly([...first.pids, ...second.pids]);
  });
});
