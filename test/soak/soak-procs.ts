import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import path from 'node:path';
import { Keyring } from '../../src/crypto/keyring';

const BIN = path.resolve(__dirname, '..', '..', 'bin', 'keyplane.js');

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

export interface KeyplaneProcess {
  proc: ChildProcess;
  base: string;
  outputDir: string;
  logFile: string;
  /** The process's VmHWM (peak resident set) in KiB, from /proc, while it runs. */
  peakRssKiB(): number | undefined;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves once it has exited. */
  stop(graceMs?: number): Promise<void>;
}

/**
 * `keyplane serve` in its own process, as deployed (bin/keyplane.js), against `databaseUrl`; its
 * stdout and stderr go to `<dir>/keyplane.log`. Resolves once /readyz answers 200.
 */
export async function startKeyplane(opts: { dir: string; databaseUrl: string; adminToken: string; env?: Record<string, string> }): Promise<KeyplaneProcess> {
  const port = await freePort();
  const outputDir = path.join(opts.dir, 'litellm');
  const logFile = path.join(opts.dir, 'keyplane.log');
  const log = createWriteStream(logFile);
  await new Promise((resolve) => log.once('open', resolve));
  const proc = spawn(process.execPath, [BIN, 'serve'], {
    env: {
      PATH: process.env.PATH!,
      KEYPLANE_DATA_DIR: path.join(opts.dir, 'kp'),
      KEYPLANE_DATABASE_URL: opts.databaseUrl,
      KEYPLANE_OUTPUT_DIR: outputDir,
      KEYPLANE_LISTEN: `127.0.0.1:${port}`,
      KEYPLANE_MASTER_KEY: Keyring.generateSpec('soak'),
      KEYPLANE_ADMIN_TOKEN: opts.adminToken,
      KEYPLANE_LOG_LEVEL: 'warn',
      KEYPLANE_HEALTH_SCHEDULE: 'off',
      KEYPLANE_RELOAD: 'none',
      ...opts.env,
    },
    stdio: ['ignore', log, log],
  });
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  const base = `http://127.0.0.1:${port}`;
  const kp: KeyplaneProcess = {
    proc,
    base,
    outputDir,
    logFile,
    peakRssKiB() {
      try {
        const m = /^VmHWM:\s*(\d+) kB$/m.exec(readFileSync(`/proc/${proc.pid}/status`, 'utf8'));
        return m ? Number(m[1]) : undefined;
      } catch {
        return undefined;
      }
    },
    async stop(graceMs = 15_000) {
      if (proc.exitCode === null && proc.signalCode === null) {
        proc.kill('SIGTERM');
        const timer = setTimeout(() => proc.kill('SIGKILL'), graceMs);
        await exited;
        clearTimeout(timer);
      }
      await new Promise((resolve) => log.end(resolve));
    },
  };
  const deadline = Date.now() + 90_000;
  for (;;) {
    if (proc.exitCode !== null || proc.signalCode !== null) {
      await kp.stop();
      throw new Error(`keyplane exited (${proc.exitCode ?? proc.signalCode}) before it was ready; its log:\n${tail(logFile)}`);
    }
    if (await fetch(`${base}/readyz`).then((r) => r.ok, () => false)) return kp;
    if (Date.now() > deadline) {
      await kp.stop();
      throw new Error(`keyplane was not ready after 90 s; its log:\n${tail(logFile)}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** The last lines of a log file, for a failure message. */
export function tail(file: string, lines = 30): string {
  try {
    return readFileSync(file, 'utf8').split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}
