import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { checkReadiness } from '../../src/reload/liveliness';
import { alive, allGone, ROOT } from './npm-start';
import { freePort } from './reload';

/** Debian's haproxy (2.6 on bookworm), the load balancer of the documented HA profile. */
export const HAPROXY_BIN = '/usr/sbin/haproxy';
/** The profile's own file, as compose mounts it. */
export const HAPROXY_CFG = path.join(ROOT, 'compose', 'haproxy.cfg');

// A second config file for tests only: a stats page, so that a test can see which replicas HAProxy
// has in service instead of guessing from its check interval.
const STATS_CFG = `frontend kp_test_stats
    bind "\${KP_TEST_STATS_BIND}"
    stats enable
    stats uri /stats
`;

// haproxy runs under this shell, which stops it as soon as its stdin closes: when the test calls
// stop(), and also when the test process dies without cleaning up. The shell then drops its own
// copies of stdout and stderr, so the log pipe ends exactly when haproxy ends.
const WATCHDOG = `bin="$1"; shift
"$bin" "$@" >&2 </dev/null &
pid=$!
echo "$pid"
exec >/dev/null 2>/dev/null
read -r _ || true
kill "$pid" 2>/dev/null
wait "$pid"
`;

const LOG_KEEP = 256 * 1024;

/** A moment in which no replica was both in HAProxy's rotation and ready: a request then had nowhere to go. */
export interface NoService {
  atMs: number;
  /** HAProxy's view, by server name. */
  states: Record<string, string>;
  /** Each replica's own readiness, in the order of `replicas`. */
  ready: boolean[];
}

/**
 * Runs haproxy as if in a container on a Docker network: in that container's network namespace
 * (`pid` is its process), with /etc/resolv.conf replaced by `resolvConf` (Docker's DNS,
 * 127.0.0.11, as in a container) in a mount namespace of its own. Needs root (nsenter, unshare).
 */
export interface HaproxyNetns {
  pid: number;
  resolvConf: string;
  /** The container's address, where haproxy is reached from this host. */
  address: string;
}

export interface HaproxyOptions {
  /** The replicas, host:port, as KP_LITELLM_1 and KP_LITELLM_2. */
  replicas: [string, string];
  /** How long to wait for haproxy to answer. */
  startTimeoutMs?: number;
  /** Default: on this host, bound to 127.0.0.1. */
  netns?: HaproxyNetns;
}

/** The command that runs haproxy (each step execs the next, so its pid is haproxy's). */
function command(o: HaproxyOptions, args: string[]): string[] {
  if (!o.netns) return [HAPROXY_BIN, ...args];
  const mountResolvConf = 'mount --bind "$0" /etc/resolv.conf && exec "$@"';
  return ['nsenter', '-t', String(o.netns.pid), '-n', 'unshare', '-m', '/bin/sh', '-c', mountResolvConf, o.netns.resolvConf, HAPROXY_BIN, ...args];
}

export class Haproxy {
  private log = '';
  private ended = false;
  private readonly endedP: Promise<void>;

  constructor(
    private readonly child: ChildProcess,
    readonly pid: number,
    readonly url: string,
    private readonly statsUrl: string,
    private readonly dir: string,
  ) {
    child.stderr!.on('data', (c: Buffer) => {
      this.log = (this.log + c.toString('utf8')).slice(-LOG_KEEP);
    });
    this.endedP = new Promise((resolve) => child.stderr!.once('close', () => resolve()));
    void this.endedP.then(() => (this.ended = true));
  }

  /** haproxy has ended (on its own, or stopped). */
  get exited(): boolean {
    return this.ended;
  }

  /** What haproxy logged (its tail): health changes, retries, redispatches, failed requests. */
  logs(): string {
    return this.log;
  }

  /** Each server's status as HAProxy sees it (`UP`, `DOWN`, `MAINT`, `UP 1/2`...), by server name. */
  async servers(): Promise<Record<string, string>> {
    const res = await fetch(`${this.statsUrl};csv`, { signal: AbortSignal.timeout(2_000) });
    if (!res.ok) throw new Error(`haproxy's stats answered ${res.status}`);
    const [header, ...rows] = (await res.text()).trim().split('\n');
    const cols = header!.replace(/^# /, '').split(',');
    const [px, sv, st] = ['pxname', 'svname', 'status'].map((c) => cols.indexOf(c));
    const out: Record<string, string> = {};
    for (const row of rows) {
      const f = row.split(',');
      if (f[px!] === 'litellm' && f[sv!] !== 'BACKEND' && f[sv!] !== 'FRONTEND') out[f[sv!]!] = f[st!]!;
    }
    return out;
  }

  /** Resolves once every replica is in service; fails with the states and haproxy's log. */
  waitAllUp(timeoutMs = 30_000): Promise<void> {
    return this.waitStates('every replica in service', (s) => Object.keys(s).length === 2 && Object.values(s).every((x) => x === 'UP'), timeoutMs);
  }

  /** Resolves once the servers' states (see servers()) satisfy `ok`; fails with the last ones and haproxy's log. */
  async waitStates(what: string, ok: (states: Record<string, string>) => boolean, timeoutMs = 30_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let last: Record<string, string> = {};
    for (;;) {
      if (this.ended) throw new Error(`haproxy exited:\n${this.log}`);
      last = await this.servers().catch(() => last);
      if (ok(last)) return;
      if (Date.now() > deadline) throw new Error(`haproxy: not ${what} within ${timeoutMs} ms: ${JSON.stringify(last)}\n${this.log}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /**
   * Samples, until stopped, whether some replica is in service: UP in HAProxy's view and ready by
   * its own /health/readiness. `replicaUrls` are in the order of the servers (litellm1, litellm2).
   * This is what a settle time must guarantee; requests alone may miss a short gap (HAProxy's
   * retries hide up to `retries` x 1 s of it from a client that is not sending at that moment).
   */
  watchService(replicaUrls: string[], clock: () => number, intervalMs = 100): { stop(): Promise<NoService[]> } {
    const gaps: NoService[] = [];
    let running = true;
    const loop = (async () => {
      while (running) {
        const states = await this.servers();
        const ready = (await Promise.all(replicaUrls.map((u) => checkReadiness(u)))).map((problem) => problem === undefined);
        if (!ready.some((r, i) => r && states[`litellm${i + 1}`]?.startsWith('UP'))) gaps.push({ atMs: clock(), states, ready });
        await new Promise((r) => setTimeout(r, intervalMs));
      }
    })();
    return {
      stop: async () => {
        running = false;
        await loop;
        return gaps;
      },
    };
  }

  /** Stops haproxy and makes sure no process of it is left. Idempotent. */
  async stop(): Promise<void> {
    this.child.stdin!.end();
    const shellDone = this.child.exitCode !== null || this.child.signalCode !== null ? Promise.resolve() : new Promise<void>((r) => this.child.once('exit', () => r()));
    const timer = setTimeout(() => {
      // The watchdog did not get haproxy down in time: end both for sure.
      if (alive(this.pid)) process.kill(this.pid, 'SIGKILL');
      this.child.kill('SIGKILL');
    }, 10_000);
    try {
      await Promise.all([shellDone, this.endedP]);
    } finally {
      clearTimeout(timer);
    }
    await allGone([this.pid], 5_000);
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/**
 * Starts Debian's haproxy with compose/haproxy.cfg in front of two replicas, bound to a free port
 * on 127.0.0.1 (or in a container's network namespace), and waits until it answers. Fails (never
 * skips) when haproxy is not installed.
 */
export async function startHaproxy(o: HaproxyOptions): Promise<Haproxy> {
  if (!existsSync(HAPROXY_BIN)) throw new Error(`haproxy is not installed (${HAPROXY_BIN} is missing): apt-get install -y haproxy (.ci/run installs it)`);
  const dir = mkdtempSync(path.join(os.tmpdir(), 'kp-haproxy-'));
  const statsCfg = path.join(dir, 'test-stats.cfg');
  writeFileSync(statsCfg, STATS_CFG);
  // A container's network namespace has its ports to itself; here they are the host's.
  const [port, statsPort] = o.netns ? [4000, 8404] : [await freePort(), await freePort()];
  const [bindHost, host] = o.netns ? ['0.0.0.0', o.netns.address] : ['127.0.0.1', '127.0.0.1'];
  const child = spawn('/bin/sh', ['-c', WATCHDOG, 'haproxy-watchdog', ...command(o, ['-f', HAPROXY_CFG, '-f', statsCfg, '-db'])], {
    stdio: ['pipe', 'pipe', 'pipe'],
    env: {
      PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin',
      KP_LB_BIND: `${bindHost}:${port}`,
      KP_LITELLM_1: o.replicas[0],
      KP_LITELLM_2: o.replicas[1],
      KP_TEST_STATS_BIND: `${bindHost}:${statsPort}`,
    },
  });
  const pid = await new Promise<number>((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (c: Buffer) => {
      out += c.toString('utf8');
      const line = out.split('\n')[0];
      if (out.includes('\n') && line) resolve(Number(line));
    });
    child.once('error', reject);
    child.once('exit', (code) => reject(new Error(`the haproxy watchdog exited with ${code}`)));
  });
  const hp = new Haproxy(child, pid, `http://${host}:${port}`, `http://${host}:${statsPort}/stats`, dir);
  try {
    const deadline = Date.now() + (o.startTimeoutMs ?? 10_000);
    for (;;) {
      if (hp.exited) throw new Error(`haproxy exited at start:\n${hp.logs()}`);
      const ok = await fetch(`http://${host}:${statsPort}/stats`, { signal: AbortSignal.timeout(1_000) }).then(
        (r) => r.ok,
        () => false,
      );
      if (ok) return hp;
      if (Date.now() > deadline) throw new Error(`haproxy did not answer on ${host}:${statsPort} within ${o.startTimeoutMs ?? 10_000} ms:\n${hp.logs()}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  } catch (err) {
    await hp.stop();
    throw err;
  }
}
