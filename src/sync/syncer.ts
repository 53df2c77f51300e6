import { createHmac, randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import client from 'prom-client';
import type { Settings } from '../config';
import type { SafeEmitter } from '../events';
import { withRetry, type Pool } from '../db/pool';
import type { Logger, SecretRegistry } from '../log';
import type { ReloadWish } from '../reload/reload-queue';
import type { ReloadRequest } from '../reload/reloader';
import { BaseConfigError, parseBaseConfig, type BaseConfig } from './base-config';
import type { DesiredState } from './desired-state';
import { LostLeadError } from './leader';
import { maskValues } from './masking';
import { Quiescence, type SyncWait } from './quiescence';
import { sha256, type Rendered } from './renderer';
import type { RenderFailure, RenderResult, SyncEvents, Trigger } from './sync-events';
import { RevisionWriter, type Written } from './revision-writer';
import { StageError } from './stage-error';
import { syncStatus } from './sync-status';
import { SyncStore, type Query, type ReloadWishRow, type RevisionView } from './sync-store';
import { packState } from './sync-tasks';
import { SyncWorker } from './sync-worker';
import { FORCE_RELOAD_OP, SYNC_CHANNEL } from './watcher';
import { AtomicWriter, CONFIG_FILE, ENV_FILE, type PreviousFiles } from './writer';

export type { RevisionView } from './sync-store';

export interface SyncerOptions {
  pool: Pool;
  /** Reads the whole desired state (normally `loadDesiredState(pool, platformKeys)`). */
  loadState: () => Promise<DesiredState>;
  log: Logger;
  secrets: SecretRegistry;
  events: SafeEmitter<SyncEvents>;
  outputDir: string;
  baseConfig?: string;
  wait: SyncWait;
  reconcileIntervalMs: number;
  checkCommand?: string;
  checkTimeoutMs?: number;
  /** False with KEYPLANE_RELOAD=litellm-api (managed models live in LiteLLM's database). */
  modelsInConfig: boolean;
  instanceId: string;
  /** Whether this instance holds the lead; a follower never renders. Default: always. */
  isLeader?: () => boolean;
  /**
   * Called once per revision that changed a file, after every file is written, with the generation
   * of the durable wish to reload that it satisfies. Must not throw.
   */
  reload?: (req: ReloadRequest, wish?: ReloadWish) => void;
  /**
   * Runs a statement on the leader's own session (LeaderElector.query). The revision is recorded
   * through it right before the swap, only while that session holds the lock: a leader that lost
   * its session without noticing cannot write. Without it, the pool (and no lock check).
   */
  leaderQuery?: Query;
  /** The thread that renders, checks and masks (one is made when not given). */
  worker?: SyncWorker;
  /** The reload queue's last result, shown in the sync status. */
  reloadStatus?: () => Promise<unknown> | unknown;
  registry?: client.Registry;
  /**
   * A keyed digest (HMAC) for what the API shows of litellm.env: a plain hash of secret-bearing
   * bytes would let a viewer confirm a guessed key offline. Default: HMAC under a key of this process.
   */
  digest?: (text: string) => string;
}

export type SyncOutcome =
  | { status: 'changed' | 'unchanged'; result: RenderResult }
  | { status: 'failed'; failure: RenderFailure }
  | { status: 'skipped'; reason: string };

export interface SyncPreview {
  changed: Record<string, boolean>;
  config_sha256: string;
  env_digest: string;
  config: string;
  env: string;
  diff: Record<string, string>;
  deployments: number;
  skipped: Rendered['skipped'];
  warnings: Rendered['warnings'];
}

const FILES = [CONFIG_FILE, ENV_FILE] as const;

interface LastRender {
  state: DesiredState;
  rendered: Rendered;
  revision: number | null;
}

type Deferred = { triggers: Set<string>; promise: Promise<SyncOutcome>; resolve: (o: SyncOutcome) => void };

function deferred(): Deferred {
  let resolve!: (o: SyncOutcome) => void;
  const promise = new Promise<SyncOutcome>((r) => (resolve = r));
  return { triggers: new Set(), promise, resolve };
}

// Renders on these triggers also hand over a reload that was wished for and never finished.
const RESUMING_TRIGGERS = new Set(['start', 'leader', 'reconcile']);

/**
 * The sync loop: nudge -> quiescence -> read the whole state -> render -> check the staged files
 * -> record a revision and the wish to reload -> atomic write -> hand to the reload queue. One
 * render at a time; nudges that arrive during a render fold into exactly one more. Rendering,
 * checking and masking run on a worker thread (SyncWorker), so that no render stalls the API.
 */
export class Syncer {
  readonly writer: AtomicWriter;
  private readonly store: SyncStore;
  private readonly worker: SyncWorker;
  private readonly quiescence: Quiescence;
  private readonly nudgeTriggers = new Set<string>();
  private running: Promise<SyncOutcome> | undefined;
  private queued: Deferred | undefined;
  private reconcileTimer: ReturnType<typeof setInterval> | undefined;
  private started = false;
  private baseCache: { text: string; parsed: BaseConfig } | undefined;
  /** Per file, the hashes this process last put there (a render, or a rollback): anything else is a hand edit. */
  private readonly known = new Map<string, Set<string | null>>();
  private last: LastRender | undefined;
  /** In litellm-api mode, what was last handed to reload: models live in LiteLLM's database, not in the files. */
  private apiStateDigest: string | undefined;
  private readonly metrics?: { renders: client.Counter<string>; duration: client.Histogram<string>; revision: client.Gauge<string>; skipped: client.Gauge<string> };

  private readonly digest: (text: string) => string;
  private readonly revisionWriter: RevisionWriter;

  constructor(private readonly opts: SyncerOptions) {
    this.writer = new AtomicWriter(opts.outputDir);
    this.store = new SyncStore(opts.pool);
    this.worker = opts.worker ?? new SyncWorker();
    const key = randomBytes(32);
    this.digest = opts.digest ?? ((text) => `hmac-sha256:${createHmac('sha256', key).update(text).digest('hex').slice(0, 32)}`);
    this.revisionWriter = new RevisionWriter({
      writer: this.writer,
      store: this.store,
      worker: this.worker,
      leaderQuery: opts.leaderQuery ?? ((text, values) => opts.pool.query(text, values)),
      fenced: opts.leaderQuery !== undefined,
      isLeader: () => this.isLeader(),
      outputDir: opts.outputDir,
      instanceId: opts.instanceId,
      checkCommand: opts.checkCommand,
      checkTimeoutMs: opts.checkTimeoutMs,
      digest: this.digest,
      mask: (text, env) => this.mask(text, env),
      log: opts.log,
    });
    this.quiescence = new Quiescence(opts.wait, () => {
      const trigger = [...this.nudgeTriggers].join('+');
      this.nudgeTriggers.clear();
      void this.request(trigger);
    });
    if (opts.registry) {
      const registers = [opts.registry];
      this.metrics = {
        renders: new client.Counter({ name: 'keyplane_sync_renders_total', help: 'Renders by outcome', labelNames: ['status'], registers }),
        duration: new client.Histogram({
          name: 'keyplane_sync_render_duration_seconds',
          help: 'Time from reading the state to the files in place',
          buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
          registers,
        }),
        revision: new client.Gauge({ name: 'keyplane_sync_revision', help: 'Last revision this instance wrote', registers }),
        skipped: new client.Gauge({ name: 'keyplane_sync_skipped_deployments', help: 'Deployments left out for want of an active provider key', registers }),
      };
    }
  }

  private isLeader(): boolean {
    return this.opts.isLeader ? this.opts.isLeader() : true;
  }

  /**
   * Checks what start-up needs: the output directory (created 0755 when missing, must be
   * writable) and the base config (file, line and problem when it is bad). Throws on either.
   */
  async prepare(): Promise<void> {
    await this.writer.prepare();
    if (this.opts.baseConfig) await this.base();
  }

  /** Prepares, starts the reconcile schedule and, when this instance leads, renders at once. */
  async start(): Promise<SyncOutcome | undefined> {
    if (this.started) return undefined;
    await this.prepare();
    this.started = true;
    this.worker.warm();
    this.reconcileTimer = setInterval(() => {
      if (this.isLeader()) void this.request('reconcile');
    }, this.opts.reconcileIntervalMs);
    return this.isLeader() ? this.request('start') : undefined;
  }

  async stop(): Promise<void> {
    this.started = false;
    if (this.reconcileTimer) clearInterval(this.reconcileTimer);
    this.reconcileTimer = undefined;
    this.quiescence.cancel();
    this.nudgeTriggers.clear();
    await this.running?.catch(() => undefined);
    await this.queued?.promise;
    await this.worker.stop();
  }

  /** A hint that something changed; ignored by followers. Renders after the quiescence wait. */
  nudge(trigger: Trigger): void {
    if (!this.started || !this.isLeader()) return;
    this.nudgeTriggers.add(trigger);
    this.quiescence.nudge();
  }

  /**
   * Renders now (or right after the render in flight). Every caller waiting on the same queued
   * render gets its outcome. Never rejects.
   */
  request(trigger: string): Promise<SyncOutcome> {
    if (!this.running) {
      this.running = this.runAndDrain(trigger);
      return this.running;
    }
    this.queued ??= deferred();
    this.queued.triggers.add(trigger);
    return this.queued.promise;
  }

  private async runAndDrain(trigger: string): Promise<SyncOutcome> {
    try {
      return await this.runOnce(trigger);
    } finally {
      const next = this.queued;
      this.queued = undefined;
      if (next) {
        this.running = this.runAndDrain([...next.triggers].join('+'));
        void this.running.then(next.resolve);
      } else this.running = undefined;
    }
  }

  /** Renders now and, with `forceReload`, hands the current files to the reload queue even if unchanged. */
  async syncNow(opts: { forceReload?: boolean } = {}): Promise<SyncOutcome> {
    const outcome = await this.request('manual');
    if (opts.forceReload && outcome.status === 'unchanged' && this.last && this.opts.reload) {
      const revision = this.last.revision ?? (await this.latestRevision())?.revision ?? 0;
      const wish = await this.store.reloadWish().catch(() => undefined);
      this.handToReload(this.reloadRequest(revision, this.last, [], outcome.result, new Map()), wish ? { generation: wish.wanted } : undefined);
    }
    return outcome;
  }

  private handToReload(req: ReloadRequest, wish: ReloadWish | undefined): void {
    if (!this.opts.reload) return;
    try {
      this.opts.reload(req, wish);
    } catch (err) {
      this.opts.log.error('the reload queue refused the new files', { revision: req.revision, err: this.mask((err as Error).message, req.env) });
    }
  }

  /** From a follower: asks the leader, through the database, to render now. */
  async forwardToLeader(opts: { forceReload?: boolean } = {}): Promise<void> {
    const op = opts.forceReload ? FORCE_RELOAD_OP : 'sync';
    await this.opts.pool.query('SELECT pg_notify($1, $2)', [SYNC_CHANNEL, JSON.stringify({ table: 'manual', op, id: this.opts.instanceId })]);
  }

  private async base(): Promise<BaseConfig> {
    const file = this.opts.baseConfig;
    if (!file) return {};
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (err) {
      throw new BaseConfigError(file, undefined, `cannot be read (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
    }
    if (this.baseCache?.text === text) return this.baseCache.parsed;
    const parsed = parseBaseConfig(text, file);
    this.baseCache = { text, parsed };
    return parsed;
  }

  /** For logs and failure messages: every known secret masked wherever it occurs. */
  private mask(text: string, env?: Record<string, string>): string {
    return maskValues(this.opts.secrets.mask(text), env ? Object.values(env) : []);
  }

  private async renderCurrent(): Promise<{ state: DesiredState; rendered: Rendered; managedDigest?: string }> {
    let state: DesiredState;
    try {
      state = await withRetry(() => this.opts.loadState());
    } catch (err) {
      throw new StageError('state', `reading the desired state failed: ${(err as Error).message}`);
    }
    let base: BaseConfig;
    try {
      base = await this.base();
    } catch (err) {
      throw new StageError('base_config', (err as Error).message);
    }
    let out;
    try {
      out = await this.worker.run('render', { state: await packState(state), base, modelsInConfig: this.opts.modelsInConfig });
    } catch (err) {
      throw new StageError('render', `rendering failed: ${(err as Error).message}`);
    }
    // Refused (LiteLLM would run without authentication): the message says what to change.
    if (!out.ok) throw new StageError('render', out.refused);
    return { state, rendered: out.rendered, managedDigest: out.managedDigest };
  }

  private async runOnce(trigger: string): Promise<SyncOutcome> {
    if (!this.isLeader()) return { status: 'skipped', reason: 'this instance does not lead' };
    const t0 = performance.now();
    let env: Record<string, string> | undefined;
    try {
      const { state, rendered, managedDigest } = await this.renderCurrent();
      env = rendered.env;
      // The values in use stay in the bounded registry while replaced ones age out of it.
      for (const v of Object.values(rendered.env)) this.opts.secrets.add(v);
      const wantedSha: Record<string, string> = { [CONFIG_FILE]: rendered.configSha256, [ENV_FILE]: rendered.envSha256 };

      const drift: string[] = [];
      const changedFiles: string[] = [];
      const onDisk = await Promise.all(FILES.map((name) => this.writer.read(name)));
      for (const [n, name] of FILES.entries()) {
        const bytes = onDisk[n];
        const diskSha = bytes ? sha256(bytes.toString('utf8')) : null;
        const known = this.known.get(name);
        if (known && !known.has(diskSha)) drift.push(name);
        if (diskSha !== wantedSha[name]) changedFiles.push(name);
      }
      if (drift.length) this.opts.log.warn('rendered files differ from what keyplane wrote (edited by hand, or deleted); rewriting them', { files: drift });

      // With models kept in LiteLLM's database (litellm-api), a model or provider change alters no
      // file, so the state itself decides; the periodic reconcile also repairs drift inside LiteLLM.
      const apiChanged = managedDigest !== undefined && managedDigest !== this.apiStateDigest;
      const apiDue = apiChanged || (managedDigest !== undefined && trigger.split('+').includes('reconcile'));
      let written: Written | undefined;
      let generation: number | undefined;
      if (changedFiles.length) {
        written = await this.revisionWriter.write(rendered, changedFiles, trigger);
        generation = written.generation;
      } else if (apiChanged) {
        generation = await this.revisionWriter.raiseWish(rendered.usesMasterKey);
      }
      for (const name of FILES) this.known.set(name, new Set([wantedSha[name]!]));

      const result: RenderResult = {
        trigger,
        changed: changedFiles.length > 0,
        changedFiles,
        revision: written?.revision ?? null,
        configSha256: rendered.configSha256,
        envSha256: rendered.envSha256,
        envDigest: this.digest(rendered.envFile),
        changedKeys: written?.changedKeys ?? [],
        drift,
        deployments: rendered.deployments,
        skipped: rendered.skipped,
        warnings: rendered.warnings,
        durationMs: performance.now() - t0,
      };
      this.last = { state, rendered, revision: written?.revision ?? this.last?.revision ?? null };
      const wish = await this.saveStatus(result.changed ? 'changed' : 'unchanged', trigger, null, result, rendered.usesMasterKey);
      if (changedFiles.length || apiDue) {
        this.apiStateDigest = managedDigest;
        generation ??= wish?.wanted;
        this.handToReload(this.reloadRequest(this.last.revision ?? 0, this.last, changedFiles, result, written?.previous ?? new Map()), generation !== undefined ? { generation } : undefined);
      } else if (wish && wish.wanted > wish.done && trigger.split('+').some((t) => RESUMING_TRIGGERS.has(t))) {
        await this.resumeReload(wish, trigger, result);
      }
      this.metrics?.renders.inc({ status: result.changed ? 'changed' : 'unchanged' });
      this.metrics?.duration.observe(result.durationMs / 1000);
      this.metrics?.skipped.set(result.skipped.length);
      if (written) this.metrics?.revision.set(written.revision);
      if (result.changed) this.opts.log.info('rendered and wrote LiteLLM files', { revision: result.revision, files: changedFiles, changed_keys: result.changedKeys, trigger, ms: Math.round(result.durationMs) });
      this.opts.events.emit('render:done', result);
      return { status: result.changed ? 'changed' : 'unchanged', result };
    } catch (err) {
      if (err instanceof LostLeadError) {
        this.opts.log.warn('lost the lead during a render; the files are left to the new leader', { trigger, reason: err.message });
        return { status: 'skipped', reason: 'this instance lost the lead before the swap' };
      }
      const e = err instanceof StageError ? err : new StageError('write', (err as Error).message);
      const failure: RenderFailure = {
        trigger,
        stage: e.stage,
        message: this.mask(e.message, env),
        ...(e.stderrTail !== undefined ? { stderrTail: this.mask(e.stderrTail, env) } : {}),
        at: new Date().toISOString(),
      };
      const transient = e.stage === 'state' || e.stage === 'record';
      this.opts.log[transient ? 'warn' : 'error']('render failed; the live files are unchanged', {
        stage: failure.stage,
        error: failure.message,
        trigger,
        ...(failure.stderrTail ? { stderr_tail: failure.stderrTail } : {}),
      });
      await this.saveStatus('failed', trigger, failure, undefined, false);
      this.metrics?.renders.inc({ status: 'failed' });
      this.opts.events.emit('render:failed', failure);
      return { status: 'failed', failure };
    }
  }

  /**
   * A reload was wished for (durably, before a swap) and never finished: a crash or a stop during
   * the reload, a lead that moved, or a reload that failed every try (the Docker engine was down).
   * The files on disk are current: they go to the reload queue again.
   */
  private async resumeReload(wish: ReloadWishRow, trigger: string, result: RenderResult): Promise<void> {
    const last = this.last!;
    const revision = last.revision ?? (await this.latestRevision().catch(() => undefined))?.revision ?? 0;
    this.opts.log.info('a reload wished for earlier has not finished; handing the current files to reload', { generation: wish.wanted, done: wish.done, revision, trigger });
    this.handToReload(this.reloadRequest(revision, last, [], result, new Map()), { generation: wish.wanted, resumed: true });
  }

  private reloadRequest(revision: number, last: LastRender, changedFiles: string[], result: RenderResult, previous: PreviousFiles): ReloadRequest {
    const shas: Record<string, string> = { [CONFIG_FILE]: result.configSha256, [ENV_FILE]: result.envSha256 };
    return {
      revision,
      outputDir: this.opts.outputDir,
      configPath: this.writer.path(CONFIG_FILE),
      envPath: this.writer.path(ENV_FILE),
      env: { ...last.rendered.env },
      state: last.state,
      trigger: result.trigger,
      // The previous bytes are held here, in memory: litellm.env keeps no .bak on disk.
      restorePrevious: async () => {
        let all = changedFiles.length > 0;
        for (const name of changedFiles) {
          const restored = await this.writer.restore(name, previous.get(name), shas[name]);
          all &&= restored;
          if (restored) {
            const now = await this.writer.read(name);
            this.known.get(name)?.add(now ? sha256(now.toString('utf8')) : null);
          }
        }
        this.opts.log.warn('put the previous LiteLLM files back after a failed reload', { revision, files: changedFiles, complete: all });
        return all;
      },
    };
  }

  private async saveStatus(
    status: 'changed' | 'unchanged' | 'failed',
    trigger: string,
    failure: RenderFailure | null,
    result: RenderResult | undefined,
    usesMasterKey: boolean,
  ): Promise<ReloadWishRow | undefined> {
    try {
      return await this.store.saveStatus(status, trigger, failure, result, usesMasterKey);
    } catch (err) {
      this.opts.log.warn('could not record the sync status', { err: (err as Error).message });
      return undefined;
    }
  }

  latestRevision(): Promise<RevisionView | undefined> {
    return this.store.latestRevision();
  }

  revisions(q: { limit: number; before?: number }): Promise<RevisionView[]> {
    return this.store.revisions(q);
  }

  /** The sync status: revision, hashes on disk, who leads, the last render and reload, what is pending. */
  status(): Promise<Record<string, unknown>> {
    return syncStatus({
      pool: this.opts.pool,
      store: this.store,
      writer: this.writer,
      instanceId: this.opts.instanceId,
      leadsHere: this.isLeader(),
      pending: this.quiescence.pending,
      rendering: this.running !== undefined,
      digest: this.digest,
      reloadStatus: () =>
        Promise.resolve()
          .then(() => this.opts.reloadStatus?.())
          .catch((err: Error) => ({ error: this.mask(err.message) })),
    });
  }

  /** What a render would write now, secrets masked, with a diff against the files on disk. Writes nothing. */
  async preview(): Promise<SyncPreview> {
    let current: { state: DesiredState; rendered: Rendered };
    try {
      current = await this.renderCurrent();
    } catch (err) {
      throw err instanceof StageError ? new Error(this.mask(err.message)) : err;
    }
    const { rendered } = current;
    const wanted: Record<string, string> = { [CONFIG_FILE]: rendered.configYaml, [ENV_FILE]: rendered.envFile };
    const onDisk: Record<string, string> = {};
    for (const name of FILES) onDisk[name] = (await this.writer.read(name))?.toString('utf8') ?? '';
    // Whole tokens only: masking by containment would tell an operator whether a guess is part of a key.
    const secrets = [...new Set([...Object.values(rendered.env), ...this.opts.secrets.snapshot()])];
    const masked = await this.worker.run('preview', { wanted, onDisk, secrets });
    return {
      changed: masked.changed,
      config_sha256: rendered.configSha256,
      env_digest: this.digest(rendered.envFile),
      config: masked.config,
      env: masked.env,
      diff: masked.diff,
      deployments: rendered.deployments,
      skipped: rendered.skipped,
      warnings: rendered.warnings,
    };
  }
}


export function syncerOptions(
  settings: Pick<Settings, 'outputDir' | 'baseConfig' | 'checkCommand' | 'reload' | 'instanceId' | 'reconcileIntervalMs' | 'syncWait'>,
  deps: Omit<SyncerOptions, 'outputDir' | 'baseConfig' | 'wait' | 'reconcileIntervalMs' | 'checkCommand' | 'modelsInConfig' | 'instanceId'>): SyncerOptions {
  return {
    ...deps,
    outputDir: settings.outputDir,
    baseConfig: settings.baseConfig,
    wait: settings.syncWait,
    reconcileIntervalMs: settings.reconcileIntervalMs,
    checkCommand: settings.checkCommand,
    modelsInConfig: settings.reload !== 'litellm-api',
    instanceId: settings.instanceId,
  };
}
