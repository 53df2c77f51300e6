import { LogAlerter, type Alerter } from '../../src/alerts/alerter';
import { SafeEmitter } from '../../src/events';
import type { Keyplane } from '../../src/main';
import { ReloadQueue, type ReloadEvents } from '../../src/reload/reload-queue';
import { createReloader } from '../../src/reload/reloader-factory';
import { loadDesiredState } from '../../src/sync/desired-state';
import type { SyncEvents } from '../../src/sync/sync-events';
import { createSyncRuntime, type SyncRuntime } from '../../src/sync/sync-runtime';

export interface ReloadWiring {
  queue: ReloadQueue;
  sync: SyncRuntime;
  events: SafeEmitter<SyncEvents & ReloadEvents>;
  stop(): Promise<void>;
}

/**
 * The sync stage and the reload queue on top of a running keyplane, wired the way main.ts is to
 * wire them (main.ts does not yet): PUT -> NOTIFY -> watcher -> render -> write -> queue -> reloader.
 * Once main.ts builds these itself, this is the one place to switch over to its parts.
 */
export async function wireSyncAndReload(kp: Keyplane, opts: { alerter?: Alerter; backoffMs?: number } = {}): Promise<ReloadWiring> {
  const events = new SafeEmitter<SyncEvents & ReloadEvents>();
  const queue = new ReloadQueue({
    reloader: createReloader(kp.settings, { log: kp.log, secrets: kp.secrets }),
    pool: kp.pool,
    log: kp.log,
    alerter: opts.alerter ?? new LogAlerter(kp.log),
    backoffMs: opts.backoffMs,
    emitter: events,
    secrets: kp.secrets,
  });
  const sync = createSyncRuntime(kp.settings, {
    pool: kp.pool,
    connectionString: (kp.pool as unknown as { options: { connectionString: string } }).options.connectionString,
    loadState: () => loadDesiredState(kp.pool, kp.platformKeys),
    log: kp.log,
    secrets: kp.secrets,
    events,
    reload: (req) => queue.submit(req),
    reloadStatus: () => queue.status(),
  });
  await sync.start();
  return {
    queue,
    sync,
    events,
    async stop() {
      await sync.stop();
      await queue.stop();
    },
  };
}
