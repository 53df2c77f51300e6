import { spawn } from 'node:child_process';
import type { ReloadTarget } from '../config';
import type { Logger, SecretRegistry } from '../log';
import { checkReadiness, waitForReadiness } from './liveliness';
import { maskSecrets } from './mask';
import type { Reloader, ReloadRequest, ReloadResult, TargetResult } from './reloader';
import { NO_PROGRESS, settle } from './rollout';

export interface CommandReloaderOptions {
  /** Run through `sh -c`, e.g. `systemctl try-restart litellm`. */
  command: string;
  timeoutMs: number;
  /** When set (and no targets are), the reload is done only once LiteLLM answers its readiness check here. */
  litellmUrl?: string;
  /**
   * Several LiteLLM processes (KEYPLANE_RELOAD_TARGETS): the command runs once per target, in order,
   * with $KEYPLANE_TARGET and $KEYPLANE_TARGET_URL, and each must be ready and settled before the next.
   */
  targets?: ReloadTarget[];
  readyTimeoutMs: number;
  /** With two or more targets: how long each must stay ready before the next command runs. */
  settleMs?: number;
  settleIntervalMs?: number;
  log: Logger;
  secrets?: SecretRegistry;
  /** The environment the command inherits (keyplane's own settings are removed from it). */
  baseEnv?: NodeJS.ProcessEnv;
  /** After SIGTERM to the group, how long before SIGKILL. */
  killGraceMs?: number;
}

const STDERR_KEEP_CHARS = 2048;
const TAIL_CHARS = 500;

interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
  timedOut: boolean;
  stderr: string;
  spawnError?: Error;
}

/** `KEYPLANE_RELOAD=command`: runs the admin's command after the files changed, then waits for LiteLLM. */
export class CommandReloader implements Reloader {
  readonly kind = 'command' as const;
  private readonly log: Logger;

  constructor(private readonly opts: CommandReloaderOptions) {
    this.log = opts.log.child({ component: 'reload-command' });
  }

  async reload(req: ReloadRequest): Promise<ReloadResult> {
    const progress = req.progress ?? NO_PROGRESS;
    const many = this.opts.targets?.length ? this.opts.targets : undefined;
    const targets: Array<{ name: string; url?: string }> = many ?? [{ name: 'command', url: this.opts.litellmUrl }];
    const settleMs = targets.length >= 2 ? (this.opts.settleMs ?? 0) : 0;
    progress.plan(targets.map((t) => t.name));
    const results: TargetResult[] = [];
    for (const [i, t] of targets.entries()) {
      const startedAt = new Date();
      progress.phase(t.name, 'stopping');
      const { error, outageMs } = await this.one(req, t, many !== undefined, () => progress.phase(t.name, 'waiting-ready'));
      if (!error && settleMs > 0 && t.url) {
        progress.phase(t.name, 'settling', { outageMs });
        const url = t.url;
        try {
          await settle({ settleMs, timeoutMs: this.opts.readyTimeoutMs, intervalMs: this.opts.settleIntervalMs ?? 250, check: () => checkReadiness(url) });
        } catch (err) {
          return this.failed(results, targets.slice(i + 1), progress, { target: t.name, startedAt, outageMs, error: `LiteLLM was ready but did not stay ready: ${(err as Error).message}` }, many !== undefined);
        }
      }
      if (error) return this.failed(results, targets.slice(i + 1), progress, { target: t.name, startedAt, outageMs, error }, many !== undefined);
      progress.phase(t.name, 'done', { outageMs });
      results.push({ target: t.name, status: 'ok', startedAt, finishedAt: new Date(), outageMs });
    }
    return { status: 'ok', targets: results };
  }

  private failed(
    results: TargetResult[],
    later: Array<{ name: string }>,
    progress: NonNullable<ReloadRequest['progress']>,
    f: { target: string; startedAt: Date; outageMs?: number; error: string },
    named: boolean,
  ): ReloadResult {
    progress.phase(f.target, 'failed', { outageMs: f.outageMs });
    results.push({ target: f.target, status: 'failed', startedAt: f.startedAt, finishedAt: new Date(), error: f.error, outageMs: f.outageMs });
    for (const t of later) {
      const now = new Date();
      progress.phase(t.name, 'skipped');
      results.push({ target: t.name, status: 'skipped', startedAt: now, finishedAt: now, error: `not reloaded: ${f.target} failed` });
    }
    return { status: 'failed', error: named ? `${f.target}: ${f.error}` : f.error, targets: results };
  }

  /** Runs the command for one target and waits until that LiteLLM is ready; the outage counts from the command's start. */
  private async one(req: ReloadRequest, t: { name: string; url?: string }, named: boolean, onExited: () => void): Promise<{ error?: string; outageMs?: number }> {
    const started = Date.now();
    const exit = await this.run(req, named ? t : undefined);
    // Mask before cutting, so that a secret cut in half at the edge is not shown in part.
    const tail = lastChars(maskSecrets(exit.stderr, req.env, this.opts.secrets).trim(), TAIL_CHARS);
    if (exit.spawnError) return { error: `reload command could not start: ${exit.spawnError.message}` };
    if (exit.timedOut) return { error: `reload command timed out after ${this.opts.timeoutMs} ms; its process group was killed${tail ? `; stderr: ${tail}` : ''}` };
    if (exit.code !== 0) {
      const how = exit.code === null ? `was killed by ${exit.signal ?? 'a signal'}` : `exited with code ${exit.code}`;
      return { error: `reload command ${how}${tail ? `; stderr: ${tail}` : ''}` };
    }
    if (!t.url) {
      this.log.info('reload command done', { revision: req.revision, target: t.name, ms: Date.now() - started });
      return {};
    }
    onExited();
    try {
      await waitForReadiness(t.url, { timeoutMs: this.opts.readyTimeoutMs });
    } catch (err) {
      return { error: `reload command succeeded but LiteLLM is not ready: ${(err as Error).message}` };
    }
    const outageMs = Date.now() - started;
    this.log.info('reload command done', { revision: req.revision, target: t.name, ms: outageMs });
    return { outageMs };
  }

  private run(req: ReloadRequest, target?: { name: string; url?: string }): Promise<Exit> {
    const env: NodeJS.ProcessEnv = {};
    // keyplane's own settings include secrets (database URL, master key) the command has no use for.
    for (const [k, v] of Object.entries(this.opts.baseEnv ?? process.env)) if (!k.startsWith('KEYPLANE_')) env[k] = v;
    Object.assign(env, {
      KEYPLANE_REVISION: String(req.revision),
      KEYPLANE_OUTPUT_DIR: req.outputDir,
      KEYPLANE_CONFIG_PATH: req.configPath,
      KEYPLANE_ENV_PATH: req.envPath,
      ...(target ? { KEYPLANE_TARGET: target.name, KEYPLANE_TARGET_URL: target.url ?? '' } : {}),
    });
    return new Promise((resolve) => {
      let stderr = '';
      let timedOut = false;
      let settled = false;
      const done = (e: Omit<Exit, 'stderr' | 'timedOut'>): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        resolve({ ...e, stderr, timedOut });
      };
      // detached: the shell leads its own process group, so a timeout can kill everything it started.
      const child = spawn('/bin/sh', ['-c', this.opts.command], { env, detached: true, stdio: ['ignore', 'ignore', 'pipe'] });
      const killGroup = (signal: NodeJS.Signals): void => {
        if (child.pid === undefined) return;
        try {
          process.kill(-child.pid, signal);
        } catch {
          // The group is already gone.
        }
      };
      const timer = setTimeout(() => {
        timedOut = true;
        this.log.warn('reload command timed out; killing its process group', { revision: req.revision, timeoutMs: this.opts.timeoutMs });
        killGroup('SIGTERM');
        // Whatever ignored SIGTERM goes too, even after the shell itself has exited.
        setTimeout(() => killGroup('SIGKILL'), this.opts.killGraceMs ?? 2_000).unref();
      }, this.opts.timeoutMs);
      child.stderr.on('data', (chunk: Buffer) => {
        stderr = lastChars(stderr + chunk.toString('utf8'), STDERR_KEEP_CHARS);
      });
      child.on('error', (err) => done({ code: null, signal: null, spawnError: err }));
      // A background process the command left running may hold stderr open: take what arrived
      // shortly after the shell's exit and stop reading, without killing what the admin started.
      child.on('exit', (code, signal) => {
        const finish = (): void => {
          child.stderr.destroy();
          done({ code, signal });
        };
        if (child.stderr.readableEnded) return finish();
        child.stderr.once('end', finish);
        setTimeout(finish, 100).unref();
      });
    });
  }
}

function lastChars(text: string, n: number): string {
  return text.length > n ? text.slice(text.length - n) : text;
}
