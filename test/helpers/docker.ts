import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type Docker from 'dockerode';
import { createDockerClient, LABEL_URL } from '../../src/reload/docker';
import { waitForLiveliness } from '../../src/reload/liveliness';

export const KP_DOCKER_HOST = 'unix:///tmp/kp-docker/docker.sock';
const BUSYBOX = '/bin/busybox';
const HOW_TO_START =
  'Start one with `eval "$(scripts/dockerd.sh)"` (it prints the DOCKER_HOST to export; scripts/ci-docker.sh also installs docker.io and busybox-static)';

/**
 * The LiteLLM stand-in: serves /health/liveliness, /health/readiness (STANDIN_READY_DELAY seconds
 * after liveliness; until then 404, where LiteLLM would answer 503) and /env (the environment it started with) on
 * $STANDIN_HOST:$STANDIN_PORT (127.0.0.1 on the host network; 0.0.0.0 in its own network
 * namespace on a bridge network, as LiteLLM listens in our compose file), and writes that
 * environment into the mounted /out. STANDIN_FAIL naming this replica (or `all`) makes it never
 * get live; STANDIN_DELAY (seconds) slows its start.
 */
const STANDIN_SCRIPT = `#!/bin/sh
if [ "$STANDIN_FAIL" = "all" ] || [ "$STANDIN_FAIL" = "$STANDIN_NAME" ]; then exec sleep 100000; fi
if [ -n "$STANDIN_DELAY" ]; then sleep "$STANDIN_DELAY"; fi
mkdir -p /tmp/www/health
# A restart keeps the container's files: not ready until this start says so, as LiteLLM.
rm -f /tmp/www/health/readiness
env | sort > /tmp/www/env
if [ -d /out ]; then env | sort > "/out/standin-$STANDIN_NAME.env"; fi
echo "I'm alive!" > /tmp/www/health/liveliness
if [ -n "$STANDIN_READY_DELAY" ]; then
  (sleep "$STANDIN_READY_DELAY"; echo '{"status":"healthy","db":"Not connected"}' > /tmp/www/health/readiness) &
else
  echo '{"status":"healthy","db":"Not connected"}' > /tmp/www/health/readiness
fi
exec httpd -f -p "\${STANDIN_HOST:-127.0.0.1}:$STANDIN_PORT" -h /tmp/www
`;
const APPLETS = ['sh', 'env', 'sort', 'sleep', 'httpd', 'mkdir', 'rm', 'echo', 'cat', 'wget'];
const IMAGE_TAG = createHash('sha256').update(STANDIN_SCRIPT).update(APPLETS.join()).digest('hex').slice(0, 12);
export const STANDIN_IMAGE = `keyplane-standin:${IMAGE_TAG}`;

/** The engine from DOCKER_HOST, else the one scripts/dockerd.sh starts. Fails (never skips) when none answers. */
export async function connectDocker(): Promise<{ docker: Docker; where: string }> {
  const host = process.env.DOCKER_HOST ?? (existsSync(KP_DOCKER_HOST.slice('unix://'.length)) ? KP_DOCKER_HOST : undefined);
  if (!host) throw new Error(`No Docker engine for the reload tests: DOCKER_HOST is unset and ${KP_DOCKER_HOST} does not exist. ${HOW_TO_START}.`);
  const client = createDockerClient(host, 60_000);
  try {
    await Promise.race([client.docker.ping(), new Promise((_, reject) => setTimeout(() => reject(new Error('no answer within 5 s')), 5_000).unref())]);
  } catch (err) {
    throw new Error(`The Docker engine at ${host} does not answer (${(err as Error).message}). ${HOW_TO_START}.`);
  }
  return client;
}

/** Imports a busybox root filesystem with the stand-in script as an image (no registry needed). */
export async function ensureStandInImage(docker: Docker): Promise<string> {
  try {
    await docker.getImage(STANDIN_IMAGE).inspect();
    return STANDIN_IMAGE;
  } catch {
    // Not there yet: build it.
  }
  if (!existsSync(BUSYBOX)) throw new Error(`${BUSYBOX} is missing: apt-get install -y busybox-static (scripts/ci-docker.sh does)`);
  const dir = mkdtempSync(path.join(os.tmpdir(), 'kp-standin-'));
  try {
    const root = path.join(dir, 'root');
    mkdirSync(path.join(root, 'bin'), { recursive: true });
    mkdirSync(path.join(root, 'tmp'));
    chmodSync(path.join(root, 'tmp'), 0o1777);
    copyFileSync(BUSYBOX, path.join(root, 'bin', 'busybox'));
    chmodSync(path.join(root, 'bin', 'busybox'), 0o755);
    for (const a of APPLETS) symlinkSync('busybox', path.join(root, 'bin', a));
    writeFileSync(path.join(root, 'standin.sh'), STANDIN_SCRIPT, { mode: 0o755 });
    const tar = path.join(dir, 'rootfs.tar');
    execFileSync('tar', ['-C', root, '--numeric-owner', '--owner=0', '--group=0', '-cf', tar, '.']);
    const [repo, tag] = STANDIN_IMAGE.split(':') as [string, string];
    const stream = await docker.importImage(tar, { repo, tag });
    await new Promise<void>((resolve, reject) => docker.modem.followProgress(stream, (err) => (err ? reject(err) : resolve())));
    await docker.getImage(STANDIN_IMAGE).inspect();
    return STANDIN_IMAGE;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** A user-defined network a stand-in joins, with the names it answers to there. */
export interface StandInNetwork {
  name: string;
  aliases?: string[];
}

export interface StandInOptions {
  name: string;
  port: number;
  /** Mounted at /out (the output directory: never a single file), or at `outTarget`. */
  outDir: string;
  outTarget?: string;
  /** User-defined bridge networks, the first as its network mode (as compose does); default: the host network. */
  networks?: StandInNetwork[];
  env?: Record<string, string>;
  /** Default: the stand-in itself; restart-mode tests read the env file first, like our compose file. */
  cmd?: string[];
  labels?: Record<string, string>;
  /** Without the `keyplane.litellm-url` label the reloader must find liveliness another way (default: with it on the host network, without on a bridge). */
  urlLabel?: boolean;
  healthcheck?: Docker.HealthConfig;
  /** Anonymous volumes, as `-v /path` makes them. */
  volumes?: string[];
}

/**
 * Test containers carry one label per test file so that cleanup finds every container a test
 * made, including the ones a reload renamed aside or created.
 */
export class StandIns {
  readonly runLabel = `keyplane.test.run`;
  readonly runId = randomBytes(4).toString('hex');

  constructor(readonly docker: Docker) {}

  url(port: number): string {
    return `http://127.0.0.1:${port}`;
  }

  /** Where a stand-in answers from this host: its loopback port, or its address on its first network. */
  async urlOf(c: Docker.Container, port: number): Promise<string> {
    const info = await c.inspect();
    if (info.HostConfig.NetworkMode === 'host') return this.url(port);
    const ip = info.NetworkSettings.Networks?.[info.HostConfig.NetworkMode ?? '']?.IPAddress;
    if (!ip) throw new Error(`${info.Name} has no address on ${info.HostConfig.NetworkMode ?? 'its network'}`);
    return `http://${ip}:${port}`;
  }

  async run(o: StandInOptions): Promise<Docker.Container> {
    const c = await this.create(o);
    await c.start();
    await waitForLiveliness(await this.urlOf(c, o.port), { timeoutMs: 15_000 });
    return c;
  }

  /** Created, not started (as a replacement is before its start). */
  async create(o: StandInOptions): Promise<Docker.Container> {
    const [primary, ...later] = o.networks ?? [];
    const env = { STANDIN_NAME: o.name, STANDIN_PORT: String(o.port), ...(primary ? { STANDIN_HOST: '0.0.0.0' } : {}), ...o.env };
    const urlLabel = o.urlLabel ?? !primary;
    const c = await this.docker.createContainer({
      name: o.name,
      Image: STANDIN_IMAGE,
      Cmd: o.cmd ?? ['/standin.sh'],
      Env: Object.entries(env).map(([k, v]) => `${k}=${v}`),
      Labels: { [this.runLabel]: this.runId, ...(urlLabel ? { [LABEL_URL]: this.url(o.port) } : {}), ...o.labels },
      Healthcheck: o.healthcheck,
      StopTimeout: 5,
      ...(o.volumes ? { Volumes: Object.fromEntries(o.volumes.map((v) => [v, {}])) } : {}),
      HostConfig: { NetworkMode: primary?.name ?? 'host', Init: true, Binds: [`${o.outDir}:${o.outTarget ?? '/out'}`], RestartPolicy: { Name: 'no' } },
      ...(primary ? { NetworkingConfig: { EndpointsConfig: { [primary.name]: { Aliases: primary.aliases } } } } : {}),
    });
    // API 1.41 takes one network at create; compose connects the others before the start, as here.
    for (const n of later) await this.docker.getNetwork(n.name).connect({ Container: c.id, EndpointConfig: { Aliases: n.aliases } });
    return c;
  }

  /** A user-defined bridge network (as compose makes one), removed with this test file's containers. */
  async network(name: string): Promise<string> {
    await this.docker.createNetwork({ Name: name, Driver: 'bridge', Labels: { [this.runLabel]: this.runId } });
    return name;
  }

  /** The environment the stand-in at `where` (a loopback port, or a base URL) started with, as it serves it. */
  async servedEnv(where: number | string): Promise<Record<string, string>> {
    const base = typeof where === 'number' ? this.url(where) : where;
    const res = await fetch(`${base}/env`, { signal: AbortSignal.timeout(2_000) });
    if (!res.ok) throw new Error(`GET /env answered ${res.status}`);
    const out: Record<string, string> = {};
    for (const line of (await res.text()).split('\n')) {
      const i = line.indexOf('=');
      if (i > 0) out[line.slice(0, i)] = line.slice(i + 1);
    }
    return out;
  }

  /** Every container of this test file, running or not (names without the leading slash). */
  async list(): Promise<Docker.ContainerInfo[]> {
    return this.docker.listContainers({ all: true, filters: { label: [`${this.runLabel}=${this.runId}`] } });
  }

  /** Removes every container of this test file, the volumes they had (a recreate keeps them on purpose), and its networks. */
  async removeAll(): Promise<void> {
    const volumes = new Set<string>();
    for (const c of await this.list()) {
      for (const m of c.Mounts ?? []) if (m.Type === 'volume' && m.Name) volumes.add(m.Name);
      await this.docker.getContainer(c.Id).remove({ force: true }).catch(() => undefined);
    }
    for (const v of volumes) await this.docker.getVolume(v).remove().catch(() => undefined);
    const networks = await this.docker.listNetworks({ filters: { label: [`${this.runLabel}=${this.runId}`] } });
    for (const n of networks) await this.docker.getNetwork(n.Id).remove().catch(() => undefined);
  }
}

export function containerNames(list: Docker.ContainerInfo[]): string[] {
  return list.flatMap((c) => c.Names.map((n) => n.replace(/^\//, ''))).sort();
}
