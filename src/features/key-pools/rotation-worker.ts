import type { Pool, PoolClient } from '../../db/pool';
import { withTransaction } from '../../db/pool';
import type { SafeEmitter } from '../../events';
import type { Logger } from '../../log';
import type { ReloadEvents } from '../../reload/reload-queue';
import type { DesiredState } from '../../sync/desired-state';
import { eligibility } from '../../sync/eligibility';
import type { SyncEvents } from '../../sync/sync-events';
import { LookLoop } from '../../jobs/look-loop';
import { appendAudit } from '../audit/audit-store';
import type { KeyStatesService, Transition } from './key-states';
import { RotationStore, type RotationRow, type RotationStatus, type RotationStep, type StepName } from './rotation-store';

export interface RotationEvents {
  /** A rotation took a step (on the instance that took it). */
  'rotation:step': { rotation_id: number; provider: string; step: StepName; status: RotationStatus };
}

export interface RotationWorkerDeps {
  pool: Pool;
  keyStates: KeyStatesService;
  /** The desired state as the renderer reads it: whether the new key is rendered wherever the old one is. */
  loadState: () => Promise<DesiredState>;
  events: SafeEmitter<SyncEvents & ReloadEvents & RotationEvents>;
  /** Only the leader carries rotations on. */
  isLeader: () => boolean;
  log: Logger;
  /** The longest wait between two looks, whatever the events say (5 s). */
  pollMs?: number;
}

/** The pause before a step that failed is tried again. */
const RETRY_MS = 1_000;

/** Who the audit log names for the steps keyplane takes on its own. */
const ACTOR = { actor: 'keyplane' };

/**
 * Carries open rotations on, on the leader: once a reload of a revision that renders the new key has
 * finished, the old key is `retiring` (still rendered) until its deadline, then it leaves every
 * pool and is `disabled` (`replaced`). Everything it acts on is in the database, so a restart or a
 * new leader continues where the last one stopped. It looks after each render and reload, when the
 * lead is won, at the nearest deadline, and at least every `pollMs`.
 */
export class RotationWorker {
  readonly store: RotationStore;
  private readonly pollMs: number;
  private readonly looks = new LookLoop(() => this.lookOnce());
  private offs: Array<() => void> = [];

  constructor(private readonly deps: RotationWorkerDeps) {
    this.store = new RotationStore(deps.pool);
    this.pollMs = deps.pollMs ?? 5_000;
  }

  start(): void {
    if (!this.looks.stopped) return;
    const look = (): void => this.nudge();
    this.offs = [this.deps.events.on('render:done', look), this.deps.events.on('reload:done', look), this.deps.events.on('leader:acquired', look)];
    this.looks.start();
  }

  async stop(): Promise<void> {
    for (const off of this.offs.splice(0)) off();
    await this.looks.stop();
  }

  /** Looks at the open rotations now (once more after the current look, when one runs). */
  nudge(): void {
    this.looks.nudge();
  }

  /** One look at the open rotations; returns the wait until the next. */
  private async lookOnce(): Promise<number> {
    let wait = this.pollMs;
    try {
      if (this.deps.isLeader()) {
        let failed = false;
        for (const id of await this.store.openIds()) {
          if (this.looks.stopped) return wait;
          if (!(await this.advance(id))) failed = true;
        }
        const deadline = await this.store.msToNextDeadline();
        // A step that failed is tried again, but not in a tight loop at a deadline already passed.
        if (deadline !== undefined) wait = Math.min(wait, Math.max(deadline + 5, failed ? RETRY_MS : 0));
      }
    } catch (err) {
      this.deps.log.warn('rotation: could not look at the open rotations; trying again', { err });
    }
    return wait;
  }

  /** One step of one rotation, in one transaction; its key state change is announced after the commit. False when it failed. */
  private async advance(id: number): Promise<boolean> {
    let transitions: Array<Transition | undefined> = [];
    let steps: Array<{ row: RotationRow; step: StepName }> = [];
    try {
      await withTransaction(this.deps.pool, async (c) => {
        transitions = [];
        steps = [];
        const r = await this.store.lockOpen(c, id);
        if (!r) return;
        const took = (row: RotationRow, step: RotationStep): void => void steps.push({ row, step: step.step });
        if (r.status === 'waiting_for_reload') await this.whenServed(c, r, transitions, took);
        else await this.whenDue(c, r, transitions, took);
      });
    } catch (err) {
      this.deps.log.warn('rotation: a step failed; it is tried again', { rotation_id: id, err });
      return false;
    }
    for (const t of transitions) await this.deps.keyStates.announce(t);
    for (const { row, step } of steps) {
      const fields = { rotation_id: row.id, provider: row.provider, step, status: row.status, new_key: row.new_key, replaces: row.replaces };
      if (step === 'failed') this.deps.log.error(`rotation ${row.id} of provider ${row.provider} stopped: ${row.error}; ${row.replaces} stays as it was`, fields);
      else this.deps.log.info(`rotation ${row.id}: ${step}`, fields);
      this.deps.events.emit('rotation:step', { rotation_id: row.id, provider: row.provider, step, status: row.status });
    }
    return true;
  }

  private async record(c: PoolClient, r: RotationRow, step: RotationStep, u: Parameters<RotationStore['update']>[2], took: (row: RotationRow, step: RotationStep) => void): Promise<RotationRow> {
    const row = await this.store.update(c, r.id, { ...u, step });
    await appendAudit(c, {
      ...ACTOR,
      action: 'provider.rotation',
      target: `provider/${r.provider}`,
      details: { rotation_id: r.id, new_key: r.new_key, replaces: r.replaces, ...step },
    });
    took(row, step);
    return row;
  }

  /**
   * Rendered: the first revision after the key was added that holds its value. Served: a reload that
   * covers that revision finished (reload_done reached the wish raised with it, or a later one).
   */
  private async whenServed(c: PoolClient, r: RotationRow, transitions: Array<Transition | undefined>, took: (row: RotationRow, step: RotationStep) => void): Promise<void> {
    let row = r;
    if (!(await this.store.keyExists(c, row.new_key))) {
      const error = `the new key ${row.new_key} was deleted before LiteLLM served it`;
      await this.record(c, row, { step: 'failed', at: new Date().toISOString(), error }, { status: 'failed', error }, took);
      return;
    }
    // A revision whose swap failed is dropped again: look for the next one.
    if (row.rendered_revision !== null && !(await this.store.revisionExists(c, row.rendered_revision))) {
      row = await this.store.update(c, row.id, { renderedRevision: null, waitGeneration: null });
    }
    if (row.rendered_revision === null) {
      const hit = await this.store.renderedWith(c, row.new_key, row.new_fingerprint, row.after_revision);
      if (!hit) return;
      row = await this.record(c, row, { step: 'rendered', at: hit.created_at.toISOString(), revision: hit.revision }, { renderedRevision: hit.revision, waitGeneration: hit.wanted }, took);
    }
    if ((await this.store.reloadDone(c)) < row.wait_generation!) return;
    row = await this.record(c, row, { step: 'served', at: new Date().toISOString(), revision: row.rendered_revision }, {}, took);

    const gap = await this.uncovered(row);
    if (gap) {
      await this.record(c, row, { step: 'failed', at: new Date().toISOString(), error: gap }, { status: 'failed', error: gap }, took);
      return;
    }
    const old = await this.store.lockKeyAndPools(c, row.replaces);
    // A key already out of service is not put back in for the grace period: it goes at once.
    if (!old || old.state === 'disabled') {
      await this.remove(c, row, transitions, took, old ? 'was out of service already' : 'was deleted meanwhile');
      return;
    }
    const { now, later: until } = await this.store.nowPlus(c, row.grace_ms);
    transitions.push(await this.deps.keyStates.transition(c, row.replaces, { state: 'retiring', reason: 'rotated', until, replacedBy: row.new_key }, ACTOR));
    await this.record(c, row, { step: 'retiring', at: now.toISOString(), key: row.replaces, until: until.toISOString() }, { status: 'retiring', retireAt: until }, took);
  }

  private async whenDue(c: PoolClient, r: RotationRow, transitions: Array<Transition | undefined>, took: (row: RotationRow, step: RotationStep) => void): Promise<void> {
    if (!(await this.store.deadlinePassed(c, r.retire_at!))) return;
    await this.remove(c, r, transitions, took);
  }

  /** The old key leaves every pool of the rotation (none is left empty) and is disabled as `replaced`. */
  private async remove(c: PoolClient, r: RotationRow, transitions: Array<Transition | undefined>, took: (row: RotationRow, step: RotationStep) => void, note?: string): Promise<void> {
    // Disabled while still in the pools, so that its alert names them.
    if (await this.store.lockKeyAndPools(c, r.replaces)) {
      transitions.push(
        await this.deps.keyStates.transition(c, r.replaces, { state: 'disabled', reason: 'replaced', note: `replaced by ${r.new_key} (rotation ${r.id})`, replacedBy: r.new_key }, ACTOR),
      );
    }
    const left = await this.store.removeFromPools(c, r.pools, r.replaces);
    await this.record(c, r, { step: 'removed', at: new Date().toISOString(), key: r.replaces, pools: left, ...(note ? { note: `${r.replaces} ${note}` } : {}) }, { status: 'done' }, took);
  }

  /**
   * Why retiring the old key would leave a model without a deployment the old key has now: the new
   * key is not rendered for it (disabled, not approved there, gone). Undefined when it is everywhere.
   */
  private async uncovered(r: RotationRow): Promise<string | undefined> {
    const el = eligibility(await this.deps.loadState());
    const served = (key: string): Set<string> => new Set(el.deployments.filter((d) => d.key.name === key && r.pools.includes(d.provider.slug)).map((d) => `${d.provider.slug}/${d.model.modelName}`));
    const byNew = served(r.new_key);
    const missing = [...served(r.replaces)].filter((m) => !byNew.has(m));
    if (missing.length === 0) return undefined;
    const why = [...new Set(el.skipped.filter((s) => s.key === r.new_key).map((s) => s.reason))];
    return `the new key ${r.new_key} is not rendered for ${missing.join(', ')}${why.length ? ` (${why.join(', ')})` : ''}`;
  }
}
