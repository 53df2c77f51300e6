import type { Logger } from '../log';
import { runCheckCommand, type CheckResult } from './check';
import { LostLeadError } from './leader';
import type { Rendered } from './renderer';
import { StageError } from './stage-error';
import type { Query, SyncStore } from './sync-store';
import type { SyncWorker } from './sync-worker';
import { CONFIG_FILE, ENV_FILE, FILE_MODES, type AtomicWriter, type PreviousFiles, type StagedFile } from './writer';

export interface RevisionWriterDeps {
  writer: AtomicWriter;
  store: SyncStore;
  worker: SyncWorker;
  /** Runs the recording statement; with `fenced`, on the leader's session (nothing is recorded unless it holds the lock). */
  leaderQuery: Query;
  fenced: boolean;
  isLeader: () => boolean;
  outputDir: string;
  instanceId: string;
  checkCommand?: string;
  checkTimeoutMs?: number;
  /** Keyed digest of litellm.env, as revisions show it. */
  digest: (text: string) => string;
  /** Masks secrets out of a text that leaves keyplane (the check command's stderr). */
  mask: (text: string, env: Record<string, string>) => string;
  log: Logger;
}

/** What a render put on disk: its recorded revision and durable wish, and the bytes it replaced. */
export interface Written {
  revision: number;
  changedKeys: string[];
  generation: number;
  previous: PreviousFiles;
}

/**
 * Puts one render's changed files on disk: validates them again (on the worker thread), stages them,
 * runs the check command, records the revision and the wish to reload, then swaps them in. Nothing
 * is swapped on a failure (a StageError, or a LostLeadError); a revision recorded for a swap that
 * then fails is dropped again.
 */
export class RevisionWriter {
  constructor(private readonly deps: RevisionWriterDeps) {}

  async write(rendered: Rendered, changedFiles: string[], trigger: string): Promise<Written> {
    const { writer } = this.deps;
    const wanted: Record<string, string> = { [CONFIG_FILE]: rendered.configYaml, [ENV_FILE]: rendered.envFile };
    // An unchanged config.yaml passed this check when it was written; parsing it again only adds latency.
    let valid: CheckResult;
    try {
      valid = await this.deps.worker.run('check', { configText: changedFiles.includes(CONFIG_FILE) ? rendered.configYaml : undefined, envText: rendered.envFile, env: rendered.env });
    } catch (err) {
      throw new StageError('check', `checking the staged files failed: ${(err as Error).message}`);
    }
    if (!valid.ok) throw new StageError('check', valid.message);
    const staged: StagedFile[] = [];
    try {
      for (const name of changedFiles) staged.push(await writer.stage(name, wanted[name]!, FILE_MODES[name]!));
    } catch (err) {
      await writer.discard(staged);
      throw new StageError('write', `staging the files failed: ${(err as Error).message}`);
    }
    if (this.deps.checkCommand) {
      const at = (name: string) => staged.find((s) => s.name === name)?.tempPath ?? writer.path(name);
      const checked: CheckResult = await runCheckCommand(
        this.deps.checkCommand,
        { configPath: at(CONFIG_FILE), envPath: at(ENV_FILE), outputDir: this.deps.outputDir },
        { timeoutMs: this.deps.checkTimeoutMs ?? 30_000, mask: (s) => this.deps.mask(s, rendered.env) },
      );
      if (!checked.ok) {
        await writer.discard(staged);
        throw new StageError('check', checked.message, checked.stderrTail);
      }
    }
    // Recorded before the swap: a crash after this point leaves files that are this revision or the
    // one before (both recorded), and a wish to reload that the next start acts on. On the leader's
    // session: a leader that lost it (even without noticing) gets no further than this.
    let recorded: { revision: number; changedKeys: string[]; generation: number };
    try {
      if (!this.deps.isLeader()) throw new LostLeadError('not the leader');
      recorded = await this.deps.store.recordRevision(this.deps.leaderQuery, this.deps.fenced, {
        configSha256: rendered.configSha256,
        envDigest: this.deps.digest(rendered.envFile),
        changedFiles,
        trigger,
        keys: rendered.keys,
        skipped: rendered.skipped,
        instanceId: this.deps.instanceId,
        usesMasterKey: rendered.usesMasterKey,
      });
    } catch (err) {
      await writer.discard(staged);
      if (err instanceof LostLeadError) throw err;
      throw new StageError('record', `recording the revision failed: ${(err as Error).message}`);
    }
    let previous: PreviousFiles;
    try {
      previous = await writer.commit(staged);
    } catch (err) {
      await this.deps.store.dropRevision(recorded.revision, recorded.generation).catch((dropErr: Error) =>
        this.deps.log.warn('could not drop the revision of a failed swap', { revision: recorded.revision, err: dropErr.message }),
      );
      throw new StageError('write', `writing the files failed: ${(err as Error).message}`);
    }
    return { ...recorded, previous };
  }

  /** Raises the wish to reload without a file change (litellm-api: the managed state changed). */
  async raiseWish(usesMasterKey: boolean): Promise<number> {
    if (!this.deps.isLeader()) throw new LostLeadError('not the leader');
    try {
      return await this.deps.store.raiseWish(this.deps.leaderQuery, this.deps.fenced, usesMasterKey);
    } catch (err) {
      if (err instanceof LostLeadError) throw err;
      throw new StageError('record', `recording the wish to reload failed: ${(err as Error).message}`);
    }
  }
}
