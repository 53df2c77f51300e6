import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type Docker from 'dockerode';
import { connectDocker, ensureStandInImage, StandIns } from './helpers/docker';
import { startHaproxy, type Haproxy } from './helpers/haproxy';
import { eventually } from './helpers/reload';

/**
 * compose/haproxy.cfg as the HA profile runs it: in a container on a Docker network, where the
 * replicas are names that Docker's DNS (127.0.0.11) resolves. HAProxy must start while a replica
 * does not exist yet, take it in once it does, and follow a replica recreated with a new address.
 * There is no registry for HAProxy's image here: Debian's haproxy runs in the network namespace of
 * a stand-in container on that network, with the /etc/resolv.conf a container there gets.
 */
jest.setTimeout(120_000);

let standIns: StandIns | undefined;
let hp: Haproxy | undefined;
let out: string | undefined;

afterAll(async () => {
  await hp?.stop();
  await standIns?.removeAll();
  if (out) rmSync(out, { recursive: true, force: true });
});

const addressOf = async (c: Docker.Container): Promise<string> => Object.values((await c.inspect()).NetworkSettings.Networks ?? {})[0]!.IPAddress;

/** The stand-ins that answered `count` requests through haproxy. */
async function answeredBy(url: string, count = 10): Promise<Set<string>> {
  const names = new Set<string>();
  for (let i = 0; i < count; i++) {
    const res = await fetch(`${url}/env`, { signal: AbortSignal.timeout(5_000) });
    if (res.status !== 200) throw new Error(`haproxy answered ${res.status}`);
    names.add(/^STANDIN_NAME=(.*)$/m.exec(await res.text())![1]!);
  }
  return names;
}

describe('the HA profile\'s haproxy.cfg on a Docker network', () => {
  it('starts while a replica is missing, takes it in when it comes, and follows a recreated replica to its new address', async () => {
    const { docker } = await connectDocker();
    await ensureStandInImage(docker);
    const si = (standIns = new StandIns(docker));
    out = mkdtempSync(path.join(os.tmpdir(), 'kp-haproxy-dns-'));
    const network = await si.network(`kp-test-${si.runId}-ha`);
    const name = (n: string): string => `kp-test-${si.runId}-${n}`;
    const replica = (n: string, alias: string): Promise<Docker.Container> => si.run({ name: name(n), port: 4000, outDir: out!, networks: [{ name: network, aliases: [alias] }] });
    // Never gets live: it only holds the network namespace haproxy runs in.
    const idle = async (n: string): Promise<Docker.Container> => {
      const c = await si.create({ name: name(n), port: 4000, outDir: out!, networks: [{ name: network }], env: { STANDIN_FAIL: 'all' } });
      await c.start();
      return c;
    };

    const lb = await idle('lb');
    const resolvConf = path.join(out, 'resolv.conf');
    writeFileSync(resolvConf, 'nameserver 127.0.0.11\noptions ndots:0\n');
    const first = await replica('litellm-1', 'litellm-1');
    hp = await startHaproxy({
      replicas: ['litellm-1:4000', 'litellm-2:4000'],
      netns: { pid: (await lb.inspect()).State.Pid, resolvConf, address: await addressOf(lb) },
    });
    await hp.waitStates('litellm1 UP while litellm-2 does not resolve', (s) => s.litellm1 === 'UP' && (s.litellm2 ?? '').startsWith('MAINT'));
    expect(await answeredBy(hp.url)).toEqual(new Set([name('litellm-1')]));

    await replica('litellm-2', 'litellm-2');
    await hp.waitAllUp();
    expect(await answeredBy(hp.url)).toEqual(new Set([name('litellm-1'), name('litellm-2')]));

    // Recreated, as keyplane's recreate mode does: another container takes the old address first.
    const oldAddress = await addressOf(first);
    await first.stop({ t: 5 });
    await first.remove();
    await idle('filler');
    const second = await replica('litellm-1b', 'litellm-1');
    const newAddress = await addressOf(second);
    expect(newAddress).not.toBe(oldAddress);
    await eventually(async () => ((await answeredBy(hp!.url)).has(name('litellm-1b')) ? true : undefined), 30_000, 'the recreated replica to answer through haproxy');
    expect(hp.logs()).toContain(`litellm/litellm1 changed its IP from ${oldAddress} to ${newAddress}`);
  });
});
