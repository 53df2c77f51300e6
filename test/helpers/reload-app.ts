import type { SafeEmitter } from '../../src/events';
import type { Keyplane, KeyplaneEvents } from '../../src/main';
import type { ReloadQueue } from '../../src/reload/reload-queue';
import type { SyncRuntime } from '../../src/sync/sync-runtime';

export interface ReloadWiring {
  queue: ReloadQueue;
  sync: SyncRuntime;
  events: SafeEmitter<KeyplaneEvents>;
}

/** The sync stage and reload queue that createKeyplane wired: PUT -> NOTIFY -> watcher -> render -> write -> queue -> reloader. */
export function reloadWiring(kp: Keyplane): ReloadWiring {
  if (!kp.sync || !kp.reloads) throw new Error('this keyplane runs without its sync loop (listen: false)');
  return { queue: kp.reloads, sync: kp.sync, events: kp.events };
}
