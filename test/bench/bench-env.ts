import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { loadSettings } from '../../src/config';
import { Keyring } from '../../src/crypto/keyring';
import { createKeyplane, type Keyplane } from '../../src/main';

export interface BenchEnv {
  kp: Keyplane;
  token: string;
  dir: string;
  close(): Promise<void>;
}

/**
 * A keyplane for benchmarks: its own embedded Postgres in a temp dir (or KEYPLANE_DATABASE_URL),
 * quiet logs, a free loopback port. Extra settings come from `env`.
 */
export async function startBenchKeyplane(env: Record<string, string> = {}): Promise<BenchEnv> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'keyplane-bench-'));
  const token = 'bench_' + randomBytes(16).toString('hex');
  const settings = loadSettings({
    KEYPLANE_DATA_DIR: dir,
    KEYPLANE_LISTEN: '127.0.0.1:0',
    KEYPLANE_MASTER_KEY: Keyring.generateSpec('bench'),
    KEYPLANE_ADMIN_TOKEN: token,
    KEYPLANE_LOG_LEVEL: 'error',
    KEYPLANE_HEALTH_SCHEDULE: 'off',
    ...(process.env.KEYPLANE_DATABASE_URL ? { KEYPLANE_DATABASE_URL: process.env.KEYPLANE_DATABASE_URL } : {}),
    ...env,
  });
  const kp = await createKeyplane(settings);
  return {
    kp,
    token,
    dir,
    async close() {
      await kp.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
