import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { loadSettings, type Settings } from '../../src/config';
import { Fingerprinter, Keyring } from '../../src/crypto/keyring';
import type { Pool } from '../../src/db/pool';
import { SafeEmitter } from '../../src/events';
import { PlatformKeysService } from '../../src/features/platform-keys/platform-keys-service';
import type { RequestContext } from '../../src/http/principal';
import { createLogger, SecretRegistry, type Logger } from '../../src/log';
import type { ReloadWish } from '../../src/reload/reload-queue';
import type { ReloadRequest } from '../../src/reload/reloader';
import { loadDesiredState } from '../../src/sync/desired-state';
import type { SyncEvents } from '../../src/sync/sync-events';
import { createSyncRuntime, type SyncRuntime } from '../../src/sync/sync-runtime';

export const TEST_CTX: RequestContext = { principal: { actor: 'test', user: 'test', role: 'admin', via: 'cli' }, requestId: 'sync-test' };

export interface CapturedLog {
  log: Logger;
  secrets: SecretRegistry;
  text: () => string;
}

/** A JSON logger whose lines are kept, to check that no secret ever reaches one. */
export function captureLog(secrets = new SecretRegistry()): CapturedLog {
  const stream = new PassThrough();
  let text = '';
  stream.on('data', (c: Buffer) => (text += c.toString('utf8')));
  return { log: createLogger({ secrets, stream, json: true, level: 'debug' }), secrets, text: () => text };
}

export function keyService(pool: Pool, secrets: SecretRegistry): PlatformKeysService {
  return new PlatformKeysService(pool, Keyring.parse(Keyring.generateSpec('t'), secrets), new Fingerprinter(randomBytes(32)));
}

/** A key value the API would accept, unique per call. */
export function keyValue(prefix = 'sk-test'): string {
  return `${prefix}-${randomBytes(12).toString('hex')}`;
}

/** Polls `file` until `accept` holds for its text, or fails after the deadline with what it last saw. */
export async function waitForFile(file: string, accept: (text: string) => boolean, timeoutMs = 10_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  let last = '(missing)';
  for (;;) {
    try {
      last = readFileSync(file, 'utf8');
      if (accept(last)) return last;
    } catch {
      last = '(missing)';
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${file}; last content:\n${last}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

export function envLine(text: string, envVar: string): string | undefined {
  return text.split('\n').find((l) => l.startsWith(`${envVar}=`))?.slice(envVar.length + 1);
}

export interface SyncInstance {
  runtime: SyncRuntime;
  events: SafeEmitter<SyncEvents>;
  settings: Settings;
  dir: string;
  reloads: ReloadRequest[];
  /** The wish each of `reloads` was handed with. */
  wishes: Array<ReloadWish | undefined>;
  logs: CapturedLog;
}

export interface SyncInstanceOptions {
  env?: Record<string, string>;
  instanceId?: string;
  logs?: CapturedLog;
  reload?: (req: ReloadRequest, wish?: ReloadWish) => void;
  reloadStatus?: () => unknown;
  /** The database URL of the two dedicated sessions (LISTEN, leader lock), e.g. through a proxy; default `url`. */
  sessionUrl?: string;
  leaderTimeoutMs?: number;
  leaderCheckMs?: number;
}

/** One keyplane instance's sync stage against `url`, files in a temp dir. Not started. */
export function syncInstance(url: string, pool: Pool, keys: PlatformKeysService, opts: SyncInstanceOptions = {}): SyncInstance {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'kp-sync-'));
  const logs = opts.logs ?? captureLog();
  const settings = loadSettings({
    KEYPLANE_DATABASE_URL: url,
    KEYPLANE_OUTPUT_DIR: dir,
    KEYPLANE_INSTANCE_ID: opts.instanceId ?? `t-${randomBytes(4).toString('hex')}`,
    ...opts.env,
  });
  const events = new SafeEmitter<SyncEvents>();
  const reloads: ReloadRequest[] = [];
  const wishes: Array<ReloadWish | undefined> = [];
  const runtime = createSyncRuntime(settings, {
    pool,
    connectionString: opts.sessionUrl ?? url,
    loadState: () => loadDesiredState(pool, keys),
    log: logs.log,
    secrets: logs.secrets,
    events,
    reload: (req, wish) => {
      reloads.push(req);
      wishes.push(wish);
      opts.reload?.(req, wish);
    },
    reloadStatus: opts.reloadStatus,
    leaderPollMs: 100,
    leaderTimeoutMs: opts.leaderTimeoutMs,
    leaderCheckMs: opts.leaderCheckMs,
    backoff: { baseMs: 20, maxMs: 500 },
  });
  return { runtime, events, settings, dir, reloads, wishes, logs };
}
