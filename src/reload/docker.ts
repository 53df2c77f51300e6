import Docker from 'dockerode';
import { ConfigError, type DockerMode } from '../config';
import type { Logger } from '../log';
import { asideName, ignoreStatus, recoverInterrupted } from './docker-recovery';
import { replacementSpec } from './docker-spec';
import { checkReadiness, waitForReadiness } from './liveliness';
import type { Reloader, ReloadRequest, ReloadResult, TargetResult } from './reloader';
import { NO_PROGRESS, settle, type RolloutProgress } from './rollout';

/** Base URL where a container answers `/health/liveliness` (needed when several share the host network). */
export const LABEL_URL = 'keyplane.litellm-url';
/** Port LiteLLM listens on inside a container on a bridge network (default 4000). */
export const LABEL_PORT = 'keyplane.litellm-port';
export { LABEL_MANAGED_ENV, LABEL_REVISION } from './docker-spec';

export const DEFAULT_DOCKER_SOCKET = '/var/run/docker.sock';

/**
 * Without KEYPLANE_DOCKER_STOP_TIMEOUT a container is given its own stop timeout (compose's
 * `stop_grace_period`: LiteLLM's time to drain), at most this long, so that the Docker client's
 * request timeout can cover any stop.
 */
export const MAX_OWN_STOP_TIMEOUT_S = 300;

/** A Docker client for `DOCKER_HOST` (unix:// or tcp://), or the default socket when unset. */
export function createDockerClient(host: string | undefined, timeoutMs: number): { docker: Docker; where: string } {
  if (!host) return { docker: new Docker({ socketPath: DEFAULT_DOCKER_SOCKET, timeout: timeoutMs }), where: `unix://${DEFAULT_DOCKER_SOCKET}` };
  if (host.startsWith('unix://')) {
    const socketPath = host.slice('unix://'.length);
    if (!socketPath) throw new ConfigError('DOCKER_HOST', 'unix:// needs a socket path, e.g. unix:///var/run/docker.sock');
    return { docker: new Docker({ socketPath, timeout: timeoutMs }), where: host };
  }
  let u: URL;
  try {
    u = new URL(host.includes('://') ? host : `tcp://${host}`);
  } catch {
    throw new ConfigError('DOCKER_HOST', 'is neither unix:///path nor tcp://host:port');
  }
  if (!['tcp:', 'http:', 'https:'].includes(u.protocol) || !u.hostname) throw new ConfigError('DOCKER_HOST', 'is neither unix:///path nor tcp://host:port');
  // TLS settings (DOCKER_TLS_VERIFY, DOCKER_CERT_PATH) are read by docker-modem from the environment.
  if (host === process.env.DOCKER_HOST) return { docker: new Docker({ timeout: timeoutMs }), where: host };
  const protocol = u.protocol === 'https:' ? 'https' : 'http';
  return { docker: new Docker({ host: u.hostname, port: u.port || (protocol === 'https' ? '2376' : '2375'), protocol, timeout: timeoutMs }), where: host };
}

export interface DockerReloaderOptions {
  docker: Docker;
  /** Where the engine is, for error messages (`unix:///var/run/docker.sock`). */
  where: string;
  containers: string[];
  label?: string;
  mode: DockerMode;
  /** Seconds Docker waits after SIGTERM before SIGKILL; default: each container's own (at most MAX_OWN_STOP_TIMEOUT_S). */
  stopTimeoutS?: number;
  readyTimeoutMs: number;
  /** With two or more targets: how long each must stay ready before the next is stopped (0: not at all). */
  settleMs?: number;
  /** Between readiness checks while a target settles. */
  settleIntervalMs?: number;
  /** Where LiteLLM answers when it runs on the host network and has no `keyplane.litellm-url` label. */
  litellmUrl: string;
  log: Logger;
  livelinessIntervalMs?: number;
}

type Info = Docker.ContainerInspectInfo;

/** A failed step that knows how to put its own target back. */
class StepError extends Error {
  constructor(message: string, readonly undo: () => Promise<void>) {
    super(message);
  }
}

/** A target reloaded in this run: how to roll it back if a later one fails, and what to clean up once all are done. */
interface Reloaded {
  undo: () => Promise<void>;
  finish: () => Promise<void>;
  /** The container now serving under the target's name. */
  live: Docker.Container;
}

/** When a target stopped serving, and how long until it was ready again. */
interface OutageClock {
  stoppedAt?: number;
  outageMs?: number;
}

interface Target {
  name: string;
  info: Info;
}

/**
 * `KEYPLANE_RELOAD=docker`: restarts or recreates the LiteLLM containers one at a time, each live
 * before the next, so one always serves. A replacement that never gets live is rolled back, with
 * every target before it and the previous files; what a crash (or an engine that went away) left
 * half done is put back at the start of the next reload.
 */
export class DockerReloader implements Reloader {
  readonly kind = 'docker' as const;
  private readonly log: Logger;
  private readonly docker: Docker;

  constructor(private readonly opts: DockerReloaderOptions) {
    this.log = opts.log.child({ component: 'reload-docker' });
    this.docker = opts.docker;
  }

  /**
   * Puts back what a reload interrupted by a crash left behind (see docker-recovery.ts). Every
   * reload runs it first; it must run where reloads run (the leader), never beside one.
   */
  async recover(): Promise<string[]> {
    const done = await recoverInterrupted(this.docker, { containers: this.opts.containers, label: this.opts.label });
    if (done.length) this.log.warn('put back what an interrupted reload left', { actions: done });
    return done;
  }

  async reload(req: ReloadRequest): Promise<ReloadResult> {
    const runStarted = new Date();
    let targets: Target[];
    try {
      await this.recover();
      const found = await this.resolveTargets();
      if (found.missing.length) {
        const error = `no such container: ${found.missing.join(', ')} (KEYPLANE_DOCKER_CONTAINERS)`;
        const now = new Date();
        return {
          status: 'failed',
          error,
          targets: [
            ...found.missing.map((target): TargetResult => ({ target, status: 'failed', startedAt: runStarted, finishedAt: now, error: 'no such container' })),
            ...found.targets.map((t): TargetResult => ({ target: t.name, status: 'skipped', startedAt: runStarted, finishedAt: now, error: 'not reloaded: another target is missing' })),
          ],
        };
      }
      targets = found.targets;
    } catch (err) {
      const error = this.describe(err);
      const target = this.opts.containers.length ? this.opts.containers.join(',') : `label:${this.opts.label ?? ''}`;
      return { status: 'failed', error, targets: [{ target, status: 'failed', startedAt: runStarted, finishedAt: new Date(), error }] };
    }
    if (targets.length === 0) {
      const error = `no running container has the label ${this.opts.label ?? ''} (KEYPLANE_DOCKER_LABEL)`;
      return { status: 'failed', error, targets: [{ target: `label:${this.opts.label ?? ''}`, status: 'failed', startedAt: runStarted, finishedAt: new Date(), error }] };
    }

    const progress = req.progress ?? NO_PROGRESS;
    progress.plan(targets.map((t) => t.name));
    const results: TargetResult[] = [];
    const reloaded: Array<{ result: TargetResult; step: Reloaded }> = [];
    const stopped = targets.filter((t) => !t.info.State.Running);
    // Behind a load balancer the next target may stop only once the balancer has this one back in
    // service: ready is not enough (it checks at its own interval, and needs `rise` passes in a row).
    const settleMs = stopped.length <= targets.length - 2 ? (this.opts.settleMs ?? 0) : 0;
    for (const [i, t] of targets.entries()) {
      if (!t.info.State.Running) continue;
      const startedAt = new Date();
      const clock: OutageClock = {};
      try {
        this.log.info('reloading container', { container: t.name, mode: this.opts.mode, revision: req.revision });
        const step = this.opts.mode === 'restart' ? await this.restartOne(t, progress, clock) : await this.recreateOne(t, req, progress, clock);
        this.log.info('container ready', { container: t.name, revision: req.revision, ms: Date.now() - startedAt.getTime(), outage_ms: clock.outageMs });
        if (settleMs > 0) {
          progress.phase(t.name, 'settling', { outageMs: clock.outageMs });
          await this.settleOne(t.name, step, settleMs);
        }
        const result: TargetResult = { target: t.name, status: 'ok', startedAt, finishedAt: new Date(), outageMs: clock.outageMs };
        progress.phase(t.name, 'done', { outageMs: clock.outageMs });
        results.push(result);
        reloaded.push({ result, step });
      } catch (err) {
        const error = this.describe(err);
        results.push({ target: t.name, status: 'failed', startedAt, finishedAt: new Date(), error, outageMs: clock.outageMs });
        progress.phase(t.name, 'failed', { outageMs: clock.outageMs });
        this.log.warn('container did not come back; rolling back', { container: t.name, revision: req.revision, error });
        const { restored, problems } = await this.rollBack(req, t.name, err instanceof StepError ? err.undo : undefined, reloaded, progress);
        for (const later of targets.slice(i + 1)) {
          const now = new Date();
          progress.phase(later.name, 'skipped');
          results.push({ target: later.name, status: 'skipped', startedAt: now, finishedAt: now, error: `not reloaded: ${t.name} failed` });
        }
        const rolled = problems.length
          ? `; rollback incomplete: ${problems.join('; ')}; the next reload puts back what is left`
          : restored
            ? '; rolled back to the previous files and containers'
            : '; rolled back to the previous containers (there were no previous files to restore)';
        return { status: 'failed', error: `${t.name}: ${error}${rolled}`, targets: results };
      }
    }
    for (const { step } of reloaded) {
      await step.finish().catch((err: unknown) => this.log.warn('cleanup after reload failed', { error: this.describe(err) }));
    }
    for (const t of stopped) {
      results.push(await this.reloadStopped(t, req));
      progress.phase(t.name, 'skipped');
    }
    return { status: results.some((r) => r.status === 'ok') ? 'ok' : 'skipped', targets: results };
  }

  /** Puts the previous files back, then the failed target, then every earlier target, newest first. */
  private async rollBack(
    req: ReloadRequest,
    failed: string,
    undoFailed: (() => Promise<void>) | undefined,
    reloaded: Array<{ result: TargetResult; step: Reloaded }>,
    progress: RolloutProgress,
  ): Promise<{ restored: boolean; problems: string[] }> {
    const problems: string[] = [];
    // Files first: a container put back (or restarted) must read the previous config when it starts.
    const restored = await req.restorePrevious().catch((err: unknown) => {
      problems.push(`files: ${(err as Error).message}`);
      return false;
    });
    if (!restored) this.log.warn('no previous files to restore', { revision: req.revision });
    const undo = async (name: string, fn: () => Promise<void>): Promise<void> => {
      try {
        await fn();
        this.log.info('container rolled back', { container: name });
        progress.phase(name, 'rolled-back');
      } catch (err) {
        problems.push(`${name}: ${this.describe(err)}`);
      }
    };
    if (undoFailed) await undo(failed, undoFailed);
    for (const r of [...reloaded].reverse()) {
      await undo(r.result.target, r.step.undo);
      r.result.status = 'failed';
      r.result.error = `rolled back because ${failed} failed`;
      r.result.finishedAt = new Date();
    }
    return { restored, problems };
  }

  private async resolveTargets(): Promise<{ targets: Target[]; missing: string[] }> {
    const targets: Target[] = [];
    const missing: string[] = [];
    if (this.opts.containers.length) {
      for (const name of this.opts.containers) {
        try {
          const info = await this.docker.getContainer(name).inspect();
          targets.push({ name: containerName(info), info });
        } catch (err) {
          if ((err as { statusCode?: number }).statusCode === 404) missing.push(name);
          else throw err;
        }
      }
    } else {
      const list = await this.docker.listContainers({ filters: { label: [this.opts.label ?? ''] } });
      for (const c of list) {
        const info = await this.docker.getContainer(c.Id).inspect();
        targets.push({ name: containerName(info), info });
      }
    }
    targets.sort((a, b) => a.name.localeCompare(b.name));
    return { targets, missing };
  }

  /**
   * `restart` mode: the container's command reads the env file from the mounted directory when it
   * starts. One restart call, not a stop and a start: a keyplane that dies in between would leave
   * LiteLLM stopped, and the engine does nothing else between the two.
   */
  private async restartOne(t: Target, progress: RolloutProgress, clock: OutageClock): Promise<Reloaded> {
    const c = this.docker.getContainer(t.info.Id);
    const restartAndWait = async (watch?: { progress: RolloutProgress; clock: OutageClock }): Promise<void> => {
      const before = (await c.inspect()).State.StartedAt;
      watch?.progress.phase(t.name, 'stopping');
      if (watch) watch.clock.stoppedAt = Date.now();
      await c.restart({ t: this.stopTimeoutOf(t.info) });
      // RestartCount only counts policy restarts; a changed StartedAt proves this one happened.
      const after = await c.inspect();
      if (after.State.StartedAt === before) throw new Error('the container was not restarted (StartedAt unchanged)');
      watch?.progress.phase(t.name, 'waiting-ready');
      await this.waitReady(c, after);
      if (watch) watch.clock.outageMs = Date.now() - watch.clock.stoppedAt!;
    };
    try {
      await restartAndWait({ progress, clock });
    } catch (err) {
      throw new StepError(this.describe(err), () => restartAndWait());
    }
    return { undo: () => restartAndWait(), finish: async () => undefined, live: c };
  }

  /**
   * `recreate` mode: a replacement with the same configuration, volumes and the rendered env. The
   * old container is renamed aside and kept (stopped) until every target is live, so that it can
   * be put back; a crash in between is put right by recover() from its name alone.
   */
  private async recreateOne(t: Target, req: ReloadRequest, progress: RolloutProgress, clock: OutageClock): Promise<Reloaded> {
    const old = this.docker.getContainer(t.info.Id);
    const stopT = this.stopTimeoutOf(t.info);
    // Everything that can happen before the stop does, so that the outage is the stop, the start and
    // LiteLLM's own start-up.
    progress.phase(t.name, 'preparing');
    const spec = await replacementSpec(this.docker, t.info, req);
    await old.rename({ name: asideName(t.name, true) });
    let created: Docker.Container | undefined;
    const putBack = async (graceful: boolean): Promise<void> => {
      if (created) {
        if (graceful) await ignoreStatus(created.stop({ t: stopT }), 304, 404);
        await ignoreStatus(created.remove({ force: true }), 404);
      }
      await old.rename({ name: t.name });
      await ignoreStatus(old.start(), 304);
      await this.waitReady(old, await old.inspect());
    };
    try {
      created = await this.docker.createContainer({ ...spec.create, name: t.name });
      for (const [network, endpoint] of spec.laterNetworks) {
        await this.docker.getNetwork(network).connect({ Container: created.id, EndpointConfig: endpoint });
      }
      // Stop before start: replicas on the host network share nothing but their own port, which the
      // new one needs. The stop is LiteLLM's drain: SIGTERM, in-flight requests finish, then it exits.
      progress.phase(t.name, 'stopping');
      clock.stoppedAt = Date.now();
      await ignoreStatus(old.stop({ t: stopT }), 304);
      progress.phase(t.name, 'starting');
      await created.start();
      progress.phase(t.name, 'waiting-ready');
      await this.waitReady(created, await created.inspect());
      clock.outageMs = Date.now() - clock.stoppedAt;
    } catch (err) {
      throw new StepError(this.describe(err), () => putBack(false));
    }
    return { undo: () => putBack(true), finish: () => ignoreStatus(old.remove({ force: true }), 404), live: created };
  }

  /**
   * A named container that is not running is recreated with the new env but left stopped (restart
   * mode leaves it alone: its command reads the env file when it starts).
   */
  private async reloadStopped(t: Target, req: ReloadRequest): Promise<TargetResult> {
    const startedAt = new Date();
    if (this.opts.mode === 'restart') {
      return { target: t.name, status: 'skipped', startedAt, finishedAt: new Date(), error: 'not running: left stopped; it reads the new env file when it starts' };
    }
    const old = this.docker.getContainer(t.info.Id);
    try {
      const spec = await replacementSpec(this.docker, t.info, req);
      await old.rename({ name: asideName(t.name, false) });
      try {
        const created = await this.docker.createContainer({ ...spec.create, name: t.name });
        for (const [network, endpoint] of spec.laterNetworks) {
          await this.docker.getNetwork(network).connect({ Container: created.id, EndpointConfig: endpoint });
        }
      } catch (err) {
        await old.rename({ name: t.name });
        throw err;
      }
      await ignoreStatus(old.remove({ force: true }), 404);
      return { target: t.name, status: 'skipped', startedAt, finishedAt: new Date(), error: 'not running: recreated with the new env and left stopped' };
    } catch (err) {
      return { target: t.name, status: 'failed', startedAt, finishedAt: new Date(), error: `not running, and recreating it failed: ${this.describe(err)}` };
    }
  }

  /**
   * Ready: answers `/health/readiness` 200 (what a load balancer checks), or, with a Docker
   * healthcheck and no URL label, is Docker-healthy (Docker's check runs inside the container and
   * needs no route to it).
   */
  private async waitReady(c: Docker.Container, info: Info): Promise<void> {
    const how = this.readinessOf(info);
    if (how === 'docker-health') return this.waitHealthy(c);
    await waitForReadiness(how, {
      timeoutMs: this.opts.readyTimeoutMs,
      intervalMs: this.opts.livelinessIntervalMs,
      giveUp: async () => {
        const now = await c.inspect();
        return now.State.Running || now.State.Restarting ? undefined : `the container exited with code ${now.State.ExitCode}`;
      },
    });
  }

  /** The URL to ask for readiness, or Docker's own health check. */
  private readinessOf(info: Info): string | 'docker-health' {
    const labelUrl = info.Config.Labels?.[LABEL_URL];
    const test = info.Config.Healthcheck?.Test;
    if (!labelUrl && test && test.length && test[0] !== 'NONE') return 'docker-health';
    return labelUrl ?? this.urlOf(info);
  }

  /** Stays ready for `settleMs`: running, and ready by the same measure as waitReady, at every check. */
  private async settleOne(name: string, step: Reloaded, settleMs: number): Promise<void> {
    const info = await step.live.inspect();
    const how = this.readinessOf(info);
    try {
      await settle({
        settleMs,
        timeoutMs: this.opts.readyTimeoutMs,
        intervalMs: this.opts.settleIntervalMs ?? 250,
        check: async () => {
          const now = await step.live.inspect();
          if (!now.State.Running) return `the container exited with code ${now.State.ExitCode}`;
          if (how !== 'docker-health') return checkReadiness(how);
          return now.State.Health?.Status === 'healthy' ? undefined : `Docker health: ${now.State.Health?.Status ?? 'none'}`;
        },
        onUnready: (seen) => this.log.warn('container stopped being ready while it settled; the settle starts over', { container: name, seen }),
      });
    } catch (err) {
      throw new StepError(`ready, but did not stay ready: ${(err as Error).message}`, step.undo);
    }
  }

  private stopTimeoutOf(info: Info): number {
    if (this.opts.stopTimeoutS !== undefined) return this.opts.stopTimeoutS;
    const own = (info.Config as { StopTimeout?: number }).StopTimeout;
    return Math.min(typeof own === 'number' && own >= 0 ? own : 10, MAX_OWN_STOP_TIMEOUT_S);
  }

  private async waitHealthy(c: Docker.Container): Promise<void> {
    const deadline = Date.now() + this.opts.readyTimeoutMs;
    for (;;) {
      const info = await c.inspect();
      const health = info.State.Health?.Status;
      if (health === 'healthy') return;
      if (health === 'unhealthy') throw new Error('Docker reports the container unhealthy');
      if (!info.State.Running && !info.State.Restarting) throw new Error(`the container exited with code ${info.State.ExitCode}`);
      if (Date.now() >= deadline) throw new Error(`not healthy within ${this.opts.readyTimeoutMs} ms (health: ${health ?? 'none'})`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  private urlOf(info: Info): string {
    if (info.HostConfig.NetworkMode === 'host') return this.opts.litellmUrl;
    const ip = Object.values(info.NetworkSettings.Networks ?? {}).find((n) => n.IPAddress)?.IPAddress;
    if (!ip) throw new Error(`cannot tell where ${containerName(info)} listens: give it the label ${LABEL_URL}`);
    return `http://${ip}:${info.Config.Labels?.[LABEL_PORT] ?? '4000'}`;
  }

  private describe(err: unknown): string {
    const e = err as { code?: string; statusCode?: number; json?: { message?: string } | null; message?: string };
    if (e.code === 'EACCES') {
      return `no permission to use the Docker socket at ${this.opts.where}: keyplane's user needs the socket's group (docker compose: group_add with DOCKER_GID; systemd: SupplementaryGroups=docker)`;
    }
    if (e.code && ['ENOENT', 'ECONNREFUSED', 'EHOSTUNREACH', 'ENOTFOUND', 'ETIMEDOUT', 'ECONNRESET'].includes(e.code)) {
      return `cannot reach the Docker engine at ${this.opts.where} (${e.code}): is Docker running, and is its socket mounted into keyplane's container? Set DOCKER_HOST to point at it`;
    }
    if (e.statusCode) return `Docker answered ${e.statusCode}: ${(e.json?.message ?? e.message ?? '').trim()}`;
    return e.message ?? String(err);
  }
}

function containerName(info: Info): string {
  return info.Name.replace(/^\//, '');
}
