import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { allGone, cmdline, signal, tree } from '../helpers/npm-start';
import { freePort } from '../helpers/reload';

/**
 * `npm run bench:startup`: time from the start command to the first 200 of GET /readyz, and the
 * memory keyplane holds when idle, on the embedded Postgres:
 * - `npm start` running the compiled build (dist, as `npm ci` builds it), first start (initdb)
 *   and next start; `node bin/keyplane.js serve` (no npm) next start;
 * - the sources through tsx (what bin/keyplane.js runs when dist is older than src), first and next.
 * Idle memory, after 10 s with nothing to do: resident set of the node process, and the
 * proportional set (shared memory counted once) of all its Postgres processes together. The build is made first (npm run build).
 */
const ROOT = path.resolve(__dirname, '..', '..');
const IDLE_MS = 10_000;

const rssKb = (pid: number): number => Number(/^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0);
// Proportional set size: shared pages (Postgres's shared buffers) divided among the processes that map them.
const pssKb = (pid: number): number => Number(/^Pss:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'))?.[1] ?? 0);

async function measure(label: string, cmd: string[], dataDir: string, idle: boolean): Promise<Record<string, string | number>> {
  const port = await freePort();
  const t0 = performance.now();
  const proc = spawn(cmd[0]!, cmd.slice(1), {
    cwd: ROOT,
    detached: true,
    stdio: 'ignore',
    env: { PATH: process.env.PATH!, HOME: process.env.HOME ?? '/root', npm_config_update_notifier: 'false', KEYPLANE_DATA_DIR: dataDir, KEYPLANE_LISTEN: `127.0.0.1:${port}`, KEYPLANE_HEALTH_SCHEDULE: 'off', KEYPLANE_LOG_LEVEL: 'warn' },
  });
  let ready = 0;
  while (!ready) {
    if (proc.exitCode !== null) throw new Error(`${label}: exited with ${proc.exitCode}`);
    try {
      if ((await fetch(`http://127.0.0.1:${port}/readyz`)).ok) ready = performance.now() - t0;
    } catch {
      // not yet
    }
    if (!ready) await new Promise((r) => setTimeout(r, 10));
  }
  const row: Record<string, string | number> = { run: label, ready_ms: Math.round(ready) };
  if (idle) {
    await new Promise((r) => setTimeout(r, IDLE_MS));
    const pids = tree(proc.pid!);
    const node = pids.find((p) => /keyplane\.js serve|cli\.(ts|js) serve/.test(cmdline(p)))!;
    const postgres = pids.filter((p) => /postgres/.test(cmdline(p)));
    row.node_rss_mb = Math.round(rssKb(node) / 1024);
    row.postgres_pss_mb = Math.round(postgres.reduce((a, p) => a + pssKb(p), 0) / 1024);
    row.postgres_processes = postgres.length;
  }
  const pids = tree(proc.pid!);
  signal(proc.pid!, 'SIGTERM');
  await allGone(pids, 30_000);
  return row;
}

async function main(): Promise<void> {
  execFileSync('npm', ['run', '-s', 'build'], { cwd: ROOT, stdio: 'inherit' });
  const rows: Array<Record<string, string | number>> = [];
  const built = mkdtempSync(path.join(os.tmpdir(), 'keyplane-bench-start-'));
  const sources = mkdtempSync(path.join(os.tmpdir(), 'keyplane-bench-start-'));
  try {
    rows.push(await measure('npm start, compiled, first start (initdb)', ['npm', 'start'], built, false));
    rows.push(await measure('npm start, compiled, next start', ['npm', 'start'], built, true));
    rows.push(await measure('node bin/keyplane.js serve, compiled, next start', [process.execPath, 'bin/keyplane.js', 'serve'], built, false));
    rows.push(await measure('sources through tsx, first start (initdb)', [process.execPath, '-r', 'tsx/cjs', 'src/cli.ts', 'serve'], sources, false));
    rows.push(await measure('sources through tsx, next start', [process.execPath, '-r', 'tsx/cjs', 'src/cli.ts', 'serve'], sources, true));
  } finally {
    rmSync(built, { recursive: true, force: true });
    rmSync(sources, { recursive: true, force: true });
  }
  console.table(rows);
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
