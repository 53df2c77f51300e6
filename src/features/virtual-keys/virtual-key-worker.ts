import { withTransaction } from '../../db/pool';
import type { Alerter } from '../../alerts/alerter';
import type { SafeEmitter } from '../../events';
import { AppError } from '../../http/errors';
import { LitellmApiError } from '../../litellm/client';
import type { Logger } from '../../log';
import type { SyncEvents } from '../../sync/sync-events';
import { LookLoop } from '../../jobs/look-loop';
import { appendAudit } from '../audit/audit-store';
import type { LitellmAdmin } from './litellm-admin';
import type { VirtualKeyRotations } from './virtual-key-rotations';
import type { VirtualKeysService } from './virtual-keys-service';
import type { RotationRow, VirtualKeysStore } from './virtual-keys-store';

export interface VirtualKeyEvents {
  /** The worker looked at the deadlines (on every instance; only the leader acts). */
  'virtual-key:looked': { leader: boolean; deleted: number; failed: number };
  /** An old key was deleted in LiteLLM at its deadline (or found gone). */
  'virtual-key:old-deleted': { alias: string; rotation_id: number };
  'virtual-key:deletion-failed': { alias: string; rotation_id: number; attempts: number; error: string };
}

export interface VirtualKeyWorkerDeps {
  store: VirtualKeysStore;
  keys: VirtualKeysService;
  litellm: LitellmAdmin;
  rotations: VirtualKeyRotations;
  alerter: Alerter;
  events: SafeEmitter<SyncEvents & VirtualKeyEvents>;
  /** Only the leader deletes. */
  isLeader: () => boolean;
  log: Logger;
  /** The longest wait between two looks, whatever the deadlines say (5 s). */
  pollMs?: number;
  /** The first retry of a failed deletion (1 s), doubling up to `retryMaxMs` (5 min). */
  retryBaseMs?: number;
  retryMaxMs?: number;
  /** Failed deletions in a row before a person is alerted (3). */
  alertAfter?: number;
  /** How long a create or rotation may run before the leader takes it for one a crash left (2 min: three LiteLLM calls and their timeouts). */
  staleMs?: number;
}

const ACTOR = 'keyplane';

/**
 * Deletes the old key of each rotation in LiteLLM at its deadline, on the leader. The deadline, each
 * failure and the time of the next try are in the database, so a restart or a new leader goes on
 * where the last one stopped. A deletion that fails is tried again with backoff and, after
 * `alertAfter` failures, alerted (the old key still works past its deadline: a person must look).
 * It also undoes what a crash left half done: a create or a rotation whose answer was never given.
 * It looks when the lead is won, when nudged, at the next deadline, and at least every `pollMs`.
 */
export class VirtualKeyWorker {
  private readonly pollMs: number;
  private readonly retryBaseMs: number;
  private readonly retryMaxMs: number;
  private readonly alertAfter: number;
  private readonly staleMs: number;
  private readonly looks = new LookLoop(() => this.lookOnce());
  private offs: Array<() => void> = [];

  constructor(private readonly deps: VirtualKeyWorkerDeps) {
    this.pollMs = deps.pollMs ?? 5_000;
    this.retryBaseMs = deps.retryBaseMs ?? 1_000;
    this.retryMaxMs = deps.retryMaxMs ?? 5 * 60_000;
    this.alertAfter = deps.alertAfter ?? 3;
    this.staleMs = deps.staleMs ?? 2 * 60_000;
  }

  start(): void {
    if (!this.looks.stopped) return;
    this.offs = [this.deps.events.on('leader:acquired', () => this.nudge())];
    this.looks.start();
  }

  async stop(): Promise<void> {
    for (const off of this.offs.splice(0)) off();
    await this.looks.stop();
  }

  /** Looks now (once more after the current look, when one runs). */
  nudge(): void {
    this.looks.nudge();
  }

  /** One look at the deadlines; returns the wait until the next. */
  private async lookOnce(): Promise<number> {
    let wait = this.pollMs;
    const leader = this.deps.isLeader();
    let deleted = 0;
    let failed = 0;
    try {
      if (leader) {
        for (const r of await this.deps.store.due()) {
          if (this.looks.stopped) return wait;
          if (await this.deleteOld(r)) deleted++;
          else failed++;
        }
        await this.recoverStale();
        const next = await this.deps.store.msToNext();
        if (next !== undefined) wait = Math.min(wait, next + 5);
      }
    } catch (err) {
      this.deps.log.warn('virtual keys: could not look at the deadlines; trying again', { err });
    }
    this.deps.events.emit('virtual-key:looked', { leader, deleted, failed });
    return wait;
  }

  /** Deletes one old key; false when LiteLLM failed (the next try is scheduled). */
  private async deleteOld(r: RotationRow): Promise<boolean> {
    let note: string | null = null;
    try {
      await this.deps.litellm.run((l) => l.deleteKeys([r.old_token]));
    } catch (err) {
      if (err instanceof LitellmApiError && err.status === 404) note = 'LiteLLM no longer had the old key';
      else {
        await this.failed(r, err);
        return false;
      }
    }
    const done = await withTransaction(this.deps.store.pool, async (c) => {
      const row = await this.deps.store.markDeleted(c, r.id, note);
      if (row) {
        await appendAudit(c, {
          actor: ACTOR, action: 'virtual_key.old_key_deleted', target: `virtual_key/${r.alias}`,
          details: { rotation_id: r.id, token: r.old_token, delete_at: r.delete_at, attempts: r.attempts + 1, ...(note ? { note } : {}) },
        });
      }
      return row;
    });
    if (!done) return true;
    this.deps.log.info('virtual key: the old key was deleted at its deadline', { alias: r.alias, rotation_id: r.id, ...(note ? { note } : {}) });
    if (r.alerted_at) await this.deps.alerter.send({ type: 'virtual_key.deletion_recovered', alias: r.alias, rotation_id: r.id, attempts: r.attempts + 1 });
    this.deps.events.emit('virtual-key:old-deleted', { alias: r.alias, rotation_id: r.id });
    return true;
  }

  private async failed(r: RotationRow, err: unknown): Promise<void> {
    const error = err instanceof LitellmApiError ? this.deps.litellm.problem(err).message : err instanceof AppError || err instanceof Error ? err.message : String(err);
    const attempts = r.attempts + 1;
    const retryMs = Math.min(this.retryMaxMs, this.retryBaseMs * 2 ** (attempts - 1));
    const row = await this.deps.store.markFailed(r.id, error, retryMs);
    if (!row) return;
    const fields = { alias: r.alias, rotation_id: r.id, attempts, delete_at: r.delete_at, retry_in_ms: retryMs, error };
    if (attempts >= this.alertAfter && !r.alerted_at) {
      this.deps.log.error(`virtual key ${r.alias}: the old key could not be deleted in LiteLLM (${attempts} tries) and still works past its deadline; keyplane keeps trying`, fields);
      await this.deps.alerter.send({ type: 'virtual_key.deletion_failed', alias: r.alias, rotation_id: r.id, token: r.old_token, attempts, delete_at: r.delete_at?.toISOString() ?? null, error });
      await this.deps.store.markAlerted(r.id);
    } else {
      this.deps.log.warn('virtual key: deleting the old key failed; it is tried again', fields);
    }
    this.deps.events.emit('virtual-key:deletion-failed', { alias: r.alias, rotation_id: r.id, attempts, error });
  }

  /** Creates and rotations a crash left half done, older than `staleMs`. */
  private async recoverStale(): Promise<void> {
    for (const r of await this.deps.store.staleGenerating(this.staleMs)) await this.deps.rotations.recover(r);
    for (const k of await this.deps.store.staleReservations(this.staleMs)) await this.deps.keys.discardCreate(k, true);
  }
}
