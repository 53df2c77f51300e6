import type client from 'prom-client';
import type { Settings } from '../config';
import type { Pool } from '../db/pool';
import type { SafeEmitter } from '../events';
import type { Logger, SecretRegistry } from '../log';
import type { ReloadWish } from '../reload/reload-queue';
import type { ReloadRequest } from '../reload/reloader';
import type { Backoff } from './backoff';
import type { DesiredState } from './desired-state';
import { LeaderElector } from './leader';
import type { SyncEvents } from './sync-events';
import { Syncer, syncerOptions } from './syncer';
import { Watcher } from './watcher';

export interface SyncRuntimeDeps {
  pool: Pool;
  /** For the two dedicated sessions (LISTEN, leader lock); the pool's URL. */
  connectionString: string;
  loadState: () => Promise<DesiredState>;
  log: Logger;
  secrets: SecretRegistry;
  events: SafeEmitter<SyncEvents>;
  reload?: (req: ReloadRequest, wish?: ReloadWish) => void;
  reloadStatus?: () => Promise<unknown> | unknown;
  registry?: client.Registry;
  /** Keyed digest of litellm.env for the API (the fingerprinter's HMAC). */
  digest?: (text: string) => string;
  /** Follower lock polling; lower in tests. */
  leaderPollMs?: number;
  /** How long the leader's session may take to answer before the instance steps down; lower in tests. */
  leaderTimeoutMs?: number;
  /** How often the leader checks that its session still holds the lock; lower in tests. */
  leaderCheckMs?: number;
  backoff?: Backoff;
}

export interface SyncRuntime {
  syncer: Syncer;
  watcher: Watcher;
  leader: LeaderElector;
  events: SafeEmitter<SyncEvents>;
  start(): Promise<void>;
  stop(): Promise<void>;
}

export const watcherAppName = (instanceId: string): string => `keyplane-watch:${instanceId}`.slice(0, 63);

/**
 * The whole sync stage, wired: a Syncer, its Watcher (LISTEN) and a LeaderElector. Start order:
 * syncer (checks output dir and base config; throws on either), watcher (LISTEN is up before the
 * first render, so no change falls between), leader (the instance that gets the lock renders at
 * once). Stop is the reverse.
 */
export function createSyncRuntime(settings: Settings, deps: SyncRuntimeDeps): SyncRuntime {
  const log = deps.log.child({ component: 'sync' });
  const leader = new LeaderElector({
    connectionString: deps.connectionString,
    instanceId: settings.instanceId,
    log: deps.log.child({ component: 'leader' }),
    events: deps.events,
    pollMs: deps.leaderPollMs,
    checkMs: deps.leaderCheckMs,
    queryTimeoutMs: deps.leaderTimeoutMs,
    backoff: deps.backoff,
  });
  const syncer = new Syncer(
    syncerOptions(settings, {
      pool: deps.pool,
      loadState: deps.loadState,
      log,
      secrets: deps.secrets,
      events: deps.events,
      isLeader: () => leader.isLeader,
      leaderQuery: (text, values) => leader.query(text, values),
      reload: deps.reload,
      reloadStatus: deps.reloadStatus,
      registry: deps.registry,
      digest: deps.digest,
    }),
  );
  const watcher = new Watcher({
    connectionString: deps.connectionString,
    applicationName: watcherAppName(settings.instanceId),
    log: deps.log.child({ component: 'watcher' }),
    events: deps.events,
    onNudge: (reason) => syncer.nudge(reason),
    onForceReload: () => void syncer.syncNow({ forceReload: true }),
    backoff: deps.backoff,
  });
  let offAcquired: (() => void) | undefined;

  return {
    syncer,
    watcher,
    leader,
    events: deps.events,
    async start() {
      await syncer.start();
      await watcher.start();
      await leader.start();
      offAcquired = deps.events.on('leader:acquired', ({ instance }) => {
        if (instance === settings.instanceId) void syncer.request('leader');
      });
      // The first acquisition happened inside leader.start(), before the listener: render now.
      if (leader.isLeader) await syncer.request('leader');
    },
    async stop() {
      offAcquired?.();
      await leader.stop();
      await watcher.stop();
      await syncer.stop();
    },
  };
}
