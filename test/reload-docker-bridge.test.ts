import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type Docker from 'dockerode';
import { createLogger, SecretRegistry } from '../src/log';
import { DockerReloader, LABEL_PORT, type DockerReloaderOptions } from '../src/reload/docker';
import { loadCompose, litellmOutputDir, litellmStartScript, type ComposeFile } from './helpers/compose';
import { connectDocker, containerNames, ensureStandInImage, STANDIN_IMAGE, StandIns } from './helpers/docker';
import { RevisionFiles } from './helpers/reload';

// The Docker reloader on the topology compose/docker-compose.yml ships: LiteLLM on a user-defined
// bridge network, listening on 0.0.0.0 in its own network namespace, found by label and reached at
// its network address and the port of its `keyplane.litellm-port` label (never KEYPLANE_LITELLM_URL).
jest.setTimeout(120_000);

const log = createLogger({ secrets: new SecretRegistry(), silent: true });
// Set so that a reloader that fell back to it would fail: on a bridge network it must not be used.
const UNREACHABLE = 'http://127.0.0.1:1';

let docker: Docker;
let where: string;
let standIns: StandIns;
let compose: ComposeFile;
let litellmPort: number;
const dirs: string[] = [];

function tempDir(): string {
  const d = mkdtempSync(path.join(os.tmpdir(), 'kp-reload-bridge-'));
  dirs.push(d);
  return d;
}

function name(suffix: string): string {
  return `kp-test-${standIns.runId}-${suffix}`;
}

/** Selects this test's containers only (other runs may share the engine); compose selects by `keyplane.litellm=true`. */
function group(suffix: string): Record<string, string> {
  return { 'kp.test.group': `${standIns.runId}-${suffix}` };
}

function reloader(o: Partial<DockerReloaderOptions>): DockerReloader {
  return new DockerReloader({ docker, where, containers: [], mode: 'restart', stopTimeoutS: 5, readyTimeoutMs: 15_000, litellmUrl: UNREACHABLE, log, ...o });
}

/** What `url` answers inside `network`, fetched by a one-off container there (names resolve by Docker's DNS). */
async function fetchInside(network: string, url: string): Promise<string> {
  const c = await docker.createContainer({
    Image: STANDIN_IMAGE,
    Cmd: ['wget', '-q', '-O', '-', url],
    Tty: true,
    Labels: { [standIns.runLabel]: standIns.runId },
    HostConfig: { NetworkMode: network },
  });
  try {
    await c.start();
    const { StatusCode } = (await c.wait()) as { StatusCode: number };
    const out = ((await c.logs({ stdout: true, stderr: true, follow: false })) as Buffer).toString('utf8').replaceAll('\r', '');
    if (StatusCode !== 0) throw new Error(`wget ${url} in ${network} exited with ${StatusCode}: ${out}`);
    return out;
  } finally {
    await c.remove({ force: true });
  }
}

beforeAll(async () => {
  ({ docker, where } = await connectDocker());
  await ensureStandInImage(docker);
  standIns = new StandIns(docker);
  compose = loadCompose();
  litellmPort = Number(compose.services.litellm!.labels![LABEL_PORT]);
});

afterEach(async () => {
  await standIns?.removeAll();
});

afterAll(async () => {
  await standIns?.removeAll();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describe('the compose topology: a user-defined bridge network', () => {
  it('restart mode: restarts LiteLLM found by label, waits for it at its network address, and it reads the new env file with the compose command', async () => {
    const net = await standIns.network(name('net'));
    const dir = tempDir();
    const files = await RevisionFiles.create(dir);
    await files.write(1, { OPENROUTER_API_KEY: 'sk-or-old-bridge-1' });
    const c = await standIns.run({
      name: name('litellm'),
      port: litellmPort,
      outDir: dir,
      outTarget: litellmOutputDir(compose),
      cmd: ['/bin/sh', '-c', litellmStartScript(compose, '/standin.sh')],
      networks: [{ name: net, aliases: ['litellm'] }],
      labels: { ...compose.services.litellm!.labels, ...group('restart') },
    });
    const url = await standIns.urlOf(c, litellmPort);
    expect(url).toMatch(new RegExp(`^http://\\d+\\.\\d+\\.\\d+\\.\\d+:${litellmPort}$`));
    expect((await standIns.servedEnv(url)).OPENROUTER_API_KEY).toBe('sk-or-old-bridge-1');
    const before = await c.inspect();

    const result = await reloader({ label: `kp.test.group=${group('restart')['kp.test.group']}` }).reload(await files.write(2, { OPENROUTER_API_KEY: 'sk-or-new-bridge-2' }));
    expect(result).toMatchObject({ status: 'ok', targets: [expect.objectContaining({ target: name('litellm'), status: 'ok' })] });

    const after = await c.inspect();
    expect(after.Id).toBe(before.Id);
    expect(after.State.StartedAt).not.toBe(before.State.StartedAt);
    expect(Object.keys(after.NetworkSettings.Networks)).toEqual([net]);
    const served = await standIns.servedEnv(await standIns.urlOf(c, litellmPort));
    expect(served.OPENROUTER_API_KEY).toBe('sk-or-new-bridge-2');
    // The key came from the file: the container's own environment never held it.
    expect(after.Config.Env.some((e) => e.startsWith('OPENROUTER_API_KEY='))).toBe(false);
    // keyplane's neighbours on the network reach it by its service name.
    expect(await fetchInside(net, `http://litellm:${litellmPort}/env`)).toContain('OPENROUTER_API_KEY=sk-or-new-bridge-2');
  });

  it('recreate mode: the replacement gets every network back, with its aliases, and answers by them', async () => {
    const [netA, netB] = [await standIns.network(name('net-a')), await standIns.network(name('net-b'))];
    const dir = tempDir();
    const files = await RevisionFiles.create(dir);
    await files.write(1, { OPENROUTER_API_KEY: 'sk-or-old-bridge-3' });
    const c = await standIns.run({
      name: name('litellm-rc'),
      port: litellmPort,
      outDir: dir,
      env: { OPENROUTER_API_KEY: 'sk-or-old-bridge-3' },
      networks: [
        { name: netA, aliases: ['litellm', 'llm-gateway'] },
        { name: netB, aliases: ['litellm-b'] },
      ],
      labels: { ...compose.services.litellm!.labels, ...group('recreate') },
    });
    const before = await c.inspect();

    const result = await reloader({ label: `kp.test.group=${group('recreate')['kp.test.group']}`, mode: 'recreate' }).reload(
      await files.write(2, { OPENROUTER_API_KEY: 'sk-or-new-bridge-4' }),
    );
    expect(result).toMatchObject({ status: 'ok', targets: [expect.objectContaining({ target: name('litellm-rc'), status: 'ok' })] });

    const replacement = docker.getContainer(name('litellm-rc'));
    const after = await replacement.inspect();
    expect(after.Id).not.toBe(before.Id);
    expect(after.HostConfig.NetworkMode).toBe(netA);
    expect(Object.keys(after.NetworkSettings.Networks).sort()).toEqual([netA, netB].sort());
    const aliases = (n: string): string[] => ((after.NetworkSettings.Networks[n]!.Aliases as string[] | null) ?? []).filter((a) => !after.Id.startsWith(a)).sort();
    expect(aliases(netA)).toEqual(['litellm', 'llm-gateway']);
    expect(aliases(netB)).toEqual(['litellm-b']);
    // Only the replacement is left (the old one was removed once it was live).
    expect(containerNames(await standIns.list())).toEqual([name('litellm-rc')]);

    expect((await standIns.servedEnv(await standIns.urlOf(replacement, litellmPort))).OPENROUTER_API_KEY).toBe('sk-or-new-bridge-4');
    expect(await fetchInside(netA, `http://llm-gateway:${litellmPort}/env`)).toContain('OPENROUTER_API_KEY=sk-or-new-bridge-4');
    expect(await fetchInside(netB, `http://litellm-b:${litellmPort}/env`)).toContain('OPENROUTER_API_KEY=sk-or-new-bridge-4');
  });

  it('waits on the port the keyplane.litellm-port label names, not a default', async () => {
    const net = await standIns.network(name('net-port'));
    const dir = tempDir();
    const files = await RevisionFiles.create(dir);
    // LiteLLM's default port (4000) is not where this one listens: only the label says 8080.
    await standIns.run({ name: name('litellm-8080'), port: 8080, outDir: dir, networks: [{ name: net }], labels: { [LABEL_PORT]: '8080', ...group('port') } });
    const ok = await reloader({ label: `kp.test.group=${group('port')['kp.test.group']}`, mode: 'recreate' }).reload(await files.write(1, { OPENROUTER_API_KEY: 'sk-or-port-8080-1' }));
    expect(ok.status).toBe('ok');

    // A label naming a port nothing listens on is found out: the replacement is rolled back.
    const wrong = await standIns.run({ name: name('litellm-wrong'), port: 8080, outDir: dir, networks: [{ name: net }], labels: { [LABEL_PORT]: '4001', ...group('wrong') } });
    const bad = await reloader({ label: `kp.test.group=${group('wrong')['kp.test.group']}`, mode: 'recreate', readyTimeoutMs: 1_500 }).reload(
      await files.write(2, { OPENROUTER_API_KEY: 'sk-or-port-8080-2' }),
    );
    expect(bad.status).toBe('failed');
    expect(bad.error).toMatch(/^kp-test-.*-litellm-wrong: http:\/\/\d+\.\d+\.\d+\.\d+:4001\/health\/readiness did not answer within 1500 ms/);
    expect((await wrong.inspect()).State.Running).toBe(true);
    expect((await standIns.servedEnv(await standIns.urlOf(docker.getContainer(name('litellm-8080')), 8080))).OPENROUTER_API_KEY).toBe('sk-or-port-8080-1');
  });
});
