/**
 * `npm run bench:pools`: 200 providers x 5 keys (1,000 keys, one model per provider, so 1,000
 * deployments) in a real keyplane (embedded Postgres, watcher, renderer, files), probed by the real
 * prober against a fake provider on loopback (a child process, so its CPU is not keyplane's) that
 * answers every probe after FAKE_DELAY_MS, and 401 for the keys it is told are revoked. Prints:
 * - one health round (provider probes and every pool key's probe; a provider's first key shares its
 *   provider's request), cold and warm;
 * - for keys revoked one at a time: the time from the failing probe's answer to the rendered
 *   config.yaml without that key's deployment (goal: under 1 s), and the round's time around it.
 * KEYPLANE_DATABASE_URL: use that Postgres instead of an embedded one.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { last4 } from '../../src/crypto/keyring';
import { platformKeyRef } from '../../src/crypto/secret-tables';
import { destinationOf } from '../../src/destinations';
import type { RoundResult } from '../../src/health/prober';
import { startBenchKeyplane, type BenchEnv } from './bench-env';

const PROVIDERS = 200;
const KEYS_PER_PROVIDER = 5;
const FAKE_DELAY_MS = 50;
const CONCURRENCY = 20;
const REVOKED_TRIALS = 5;
const GOAL_MS = 1000;
const KINDS = ['openai', 'anthropic', 'gemini', 'openrouter'] as const;

// The fake: 401 for a revoked key (told over IPC), else 200 (OpenRouter's key record with credit on .../key).
const FAKE_SERVER = `
const http = require('node:http');
const revoked = new Set();
process.on('message', (m) => revoked.add(m));
const keyOf = (h) => (/^Bearer (.+)$/.exec(h.authorization || '') || [])[1] || h['x-api-key'] || h['x-goog-api-key'];
const server = http.createServer((req, res) => {
  setTimeout(() => {
    if (revoked.has(keyOf(req.headers))) {
      res.writeHead(401, { 'content-type': 'application/json' });
      return res.end('{"error":{"type":"invalid_request_error","code":"invalid_api_key"}}');
    }
    res.writeHead(200, { 'content-type': 'application/json' });
    if (req.url.includes('/health/readiness')) return res.end('{"status":"healthy","litellm_version":"bench"}');
    if (req.url.endsWith('/key')) return res.end('{"data":{"limit":100,"usage":10,"limit_remaining":90}}');
    res.end('{"object":"list","data":[{"id":"m"}]}');
  }, ${FAKE_DELAY_MS});
});
server.keepAliveTimeout = 60000;
server.listen(0, '127.0.0.1', () => console.log(server.address().port));
process.on('disconnect', () => process.exit(0));
`;

function startFake(): Promise<{ url: string; child: ChildProcess }> {
  const child = spawn(process.execPath, ['-e', FAKE_SERVER], { stdio: ['ignore', 'pipe', 'inherit', 'ipc'] });
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.stdout!.once('data', (d: Buffer) => resolve({ url: `http://127.0.0.1:${Number(String(d).trim())}`, child }));
  });
}

const keyName = (p: number, k: number): string => `pool-${String(p).padStart(3, '0')}-k${k}`;
const envOf = (name: string): string => `${name.toUpperCase().replace(/-/g, '_')}_API_KEY`;

/** Keys, providers, pools, approvals and models written straight to the tables in one transaction (setup is not measured). */
async function seed(env: BenchEnv, fakeUrl: string): Promise<Map<string, string>> {
  const { kp } = env;
  const values = new Map<string, string>();
  const c = await kp.pool.connect();
  try {
    await c.query('BEGIN');
    for (let p = 0; p < PROVIDERS; p++) {
      const slug = `pool-${String(p).padStart(3, '0')}`;
      const kind = KINDS[p % KINDS.length]!;
      const apiBase = `${fakeUrl}/${slug}${kind === 'openrouter' ? '/api/v1' : ''}`;
      const names = Array.from({ length: KEYS_PER_PROVIDER }, (_, k) => keyName(p, k));
      for (const name of names) {
        const value = `sk-bench-${randomBytes(16).toString('hex')}`;
        values.set(name, value);
        const { jwe, kid } = await kp.keyring.encrypt(value, platformKeyRef(name, 1));
        await c.query('INSERT INTO platform_keys (name, env_var, current_version) VALUES ($1, $2, 1)', [name, envOf(name)]);
        await c.query(`INSERT INTO platform_key_versions (name, version, jwe, kid, fingerprint, last4, created_by) VALUES ($1, 1, $2, $3, $4, $5, 'bench')`, [
          name, jwe, kid, kp.platformKeys.fingerprint(value), last4(value),
        ]);
        await c.query("INSERT INTO key_destinations (key_name, destination, approved_by) VALUES ($1, $2, 'bench')", [name, destinationOf(kind, apiBase)]);
      }
      await c.query('INSERT INTO providers (slug, kind, api_base, key_name) VALUES ($1, $2, $3, $4)', [slug, kind, apiBase, names[0]]);
      await c.query('DELETE FROM provider_keys WHERE provider = $1', [slug]);
      await c.query(
        'INSERT INTO provider_keys (provider, key_name, weight, position) SELECT $1, k.name, 1, k.ord::int - 1 FROM unnest($2::text[]) WITH ORDINALITY AS k(name, ord)',
        [slug, names],
      );
      await c.query('INSERT INTO models (id, model_name, provider, model) VALUES ($1, $2, $3, $4)', [randomUUID(), `${slug}-model`, slug, 'bench-model']);
    }
    await c.query('COMMIT');
  } finally {
    c.release();
  }
  return values;
}

const configText = (env: BenchEnv): string => readFileSync(path.join(env.kp.settings.outputDir, 'config.yaml'), 'utf8');
const count = (text: string, needle: string): number => text.split(needle).length - 1;

async function waitUntil(what: string, check: () => boolean, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function timedRound(env: BenchEnv): Promise<{ result: RoundResult; wallMs: number; cpuMs: number }> {
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const result = await env.kp.prober!.runNow();
  const cpu = process.cpuUsage(cpu0);
  return { result, wallMs: performance.now() - t0, cpuMs: (cpu.user + cpu.system) / 1000 };
}

async function main(): Promise<void> {
  const fake = await startFake();
  const env = await startBenchKeyplane({ KEYPLANE_HEALTH_CONCURRENCY: String(CONCURRENCY), KEYPLANE_LITELLM_URL: `${fake.url}/litellm` });
  try {
    const values = await seed(env, fake.url);
    const total = PROVIDERS * KEYS_PER_PROVIDER;
    await env.kp.sync!.syncer.syncNow();
    await waitUntil(`${total} deployments are rendered`, () => count(configText(env), 'os.environ/POOL_') === total);
    console.log(
      `pools: ${PROVIDERS} providers x ${KEYS_PER_PROVIDER} keys (${KINDS.join(', ')}), ${total} deployments; fake answers in ${FAKE_DELAY_MS} ms; ` +
        `concurrency ${CONCURRENCY}; ${total} requests per round (each provider's probe shares its first key's), floor ${((total / CONCURRENCY) * FAKE_DELAY_MS).toFixed(0)} ms`,
    );

    const rows: Array<Record<string, string | number>> = [];
    for (const label of ['round, cold (first key_health rows)', 'round, warm']) {
      const m = await timedRound(env);
      const ok = m.result.keys.filter((k) => k.outcome === 'ok').length;
      rows.push({ run: label, round_ms: Math.round(m.wallMs), keyplane_cpu_ms: Math.round(m.cpuMs), keys_ok: `${ok}/${m.result.keys.length}`, probe_to_render_ms: '-' });
    }

    for (let trial = 0; trial < REVOKED_TRIALS; trial++) {
      // Spread over the pools and the kinds.
      const p = Math.floor((trial + 0.5) * (PROVIDERS / REVOKED_TRIALS)) + trial;
      const name = keyName(p, trial % KEYS_PER_PROVIDER);
      const ref = `os.environ/${envOf(name)}`;
      fake.child.send(values.get(name)!);
      let renderedAt: number | undefined;
      const off = env.kp.events.on('render:done', () => {
        if (renderedAt === undefined && !configText(env).includes(ref)) renderedAt = Date.now();
      });
      try {
        const m = await timedRound(env);
        const k = m.result.keys.find((r) => r.name === name)!;
        if (k.state !== 'disabled') throw new Error(`${name} was not disabled: ${JSON.stringify(k)}`);
        await waitUntil(`${name} is out of config.yaml`, () => renderedAt !== undefined, 10_000);
        const ms = renderedAt! - Date.parse(k.checked_at);
        rows.push({
          run: `revoked ${name} (${KINDS[p % KINDS.length]})`,
          round_ms: Math.round(m.wallMs),
          keyplane_cpu_ms: Math.round(m.cpuMs),
          keys_ok: `${m.result.keys.filter((r) => r.outcome === 'ok').length}/${m.result.keys.length}`,
          probe_to_render_ms: `${ms} ${ms < GOAL_MS ? '(within goal)' : '(OVER GOAL)'}`,
        });
      } finally {
        off();
      }
    }
    console.table(rows);
    console.log(`goal: a revoked key out of the rendered files within ${GOAL_MS} ms of its failing probe (times: the probe's answer to the render:done without it, wall clock)`);
  } finally {
    await env.close();
    fake.child.kill();
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
