import { spawn } from 'node:child_process';
import type { Logger, SecretRegistry } from '../log';
import { waitForLiveliness } from './liveliness';
import { maskSecrets } from './mask';
import type { Reloader, ReloadRequest, ReloadResult } from './reloader';

export interface CommandReloaderOptions {
  /** Run through `sh -c`, e.g. `systemctl try-restart litellm`. */
  command: string;
  timeoutMs: number;
  /** When set, the reload is done only once LiteLLM answers its liveliness check here. */
  litellmUrl?: string;
  readyTimeoutMs: number;
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
    const startedAt = new Date();
    const fail = (error: string): ReloadResult => ({
      status: 'failed',
      error,
      targets: [{ target: 'command', status: 'failed', startedAt, finishedAt: new Date(), error }],
    });
    const exit = await this.run(req);
    // Mask before cutting, so that a secret cut in half at the edge is not shown in part.
    const tail = lastChars(maskSecrets(exit.stderr, req.env, this.opts.secrets).trim(), TAIL_CHARS);
    if (exit.spawnError) return fail(`reload command could not start: ${exit.spawnError.message}`);
    if (exit.timedOut) return fail(`reload command timed out after ${this.opts.timeoutMs} ms; its process group was killed${tail ? `; stderr: ${tail}` : ''}`);
    if (exit.code !== 0) {
      const how = exit.code === null ? `was killed by ${exit.signal ?? 'a signal'}` : `exited with code ${exit.code}`;
      return fail(`reload command ${how}${tail ? `; stderr: ${tail}` : ''}`);
    }
    if (this.opts.litellmUrl) {
      try {
        await waitForLiveliness(this.opts.litellmUrl, { timeoutMs: this.opts.readyTimeoutMs });
      } catch (err) {
        return fail(`reload command succeeded but LiteLLM is not live: ${(err as Error).message}`);
      }
    }
    this.log.info('reload command done', { revision: req.revision, ms: Date.now() - startedAt.getTime() });
    return { status: 'ok', targets: [{ target: 'command', status: 'ok', startedAt, finishedAt: new Date() }] };
  }

  private run(req: ReloadRequest): Promise<Exit> {
    const env: NodeJS.ProcessEnv = {};
    // keyplane's own settings include secrets (database URL, master key) the command has no use for.
    for (const [k, v] of Object.entries(this.opts.baseEnv ?? process.env)) if (!k.startsWith('KEYPLANE_')) env[k] = v;
    Object.assign(env, {
      KEYPLANE_REVISION: String(req.revision),
      KEYPLANE_OUTPUT_DIR: req.outputDir,
      KEYPLANE_CONFIG_PATH: req.configPath,
      KEYPLANE_ENV_PATH: req.envPath,
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
