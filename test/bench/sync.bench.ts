import { randomBytes, randomUUID } from 'node:crypto';
import { readFileSync, watch } from 'node:fs';
import path from 'node:path';
import { SafeEmitter } from '../../src/events';
import { approvalsFor } from '../helpers/state';
import type { Keyplane } from '../../src/main';
import { parseBaseConfig } from '../../src/sync/base-config';
import { loadDesiredState, type DesiredState } from '../../src/sync/desired-state';
import { render } from '../../src/sync/renderer';
import type { SyncEvents } from '../../src/sync/sync-events';
import { createSyncRuntime, type SyncRuntime } from '../../src/sync/sync-runtime';
import { startBenchKeyplane, type BenchEnv } from './bench-env';

/**
 * `npm run bench:sync`:
 * 1. p50/p99 from a PUT's 200 to the new value in litellm.env, over ROTATIONS sequential rotations
 *    through the admin API, KEYPLANE_SYNC_WAIT=0ms (goal: p99 <= 50 ms);
 * 2. render time for 5,000 deployments (goal <= 100 ms), and the whole render-check-write of them;
 * 3. renders caused by a burst of 1,000 committed changes with KEYPLANE_SYNC_WAIT=50ms:500ms
 *    (goal <= 3), and for comparison by 1,000 PUTs through the API.
 */
const ROTATIONS = Number(process.env.BENCH_ROTATIONS ?? 1000);
const DEPLOYMENTS = 5000;

interface Attached {
  sync: SyncRuntime;
  own: boolean;
}

/** main.ts's own sync stage when it has one; else one wired the way main.ts wires it. */
async function attachSync(kp: Keyplane): Promise<Attached> {
  const existing = (kp as unknown as { sync?: SyncRuntime }).sync;
  if (existing) return { sync: existing, own: false };
  const sync = createSyncRuntime(kp.settings, {
    pool: kp.pool,
    connectionString: (kp.pool as unknown as { options: { connectionString: string } }).options.connectionString,
    loadState: () => loadDesiredState(kp.pool, kp.platformKeys),
    log: kp.log,
    secrets: kp.secrets,
    events: new SafeEmitter<SyncEvents>(),
  });
  await sync.start();
  return { sync, own: true };
}

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
}

const round = (x: number): number => Math.round(x * 100) / 100;

/** Resolves at the first moment `file` holds `line` (inotify events, plus a 2 ms poll as a safety net). */
function whenFileHas(file: string, line: string): Promise<number> {
  return new Promise((resolve) => {
    const check = (): boolean => {
      let text = '';
      try {
        text = readFileSync(file, 'utf8');
      } catch {
        return false;
      }
      if (!text.includes(line)) return false;
      const at = performance.now();
      watcher.close();
      clearInterval(poll);
      resolve(at);
      return true;
    };
    const watcher = watch(path.dirname(file), () => check());
    const poll = setInterval(check, 2);
    check();
  });
}

async function rotationLatency(): Promise<Record<string, number | string>> {
  const env = await startBenchKeyplane({ KEYPLANE_SYNC_WAIT: '0ms' });
  const { sync, own } = await attachSync(env.kp);
  const envFile = path.join(env.kp.settings.outputDir, 'litellm.env');
  const url = `${env.kp.url}/api/v1/admin/platform-keys/openrouter`;
  const headers = { authorization: `Bearer ${env.token}`, 'content-type': 'application/json' };
  const ms: number[] = [];
  let alreadyThere = 0;
  try {
    for (let i = 0; i < ROTATIONS + 20; i++) {
      const value = `sk-or-v1-${randomBytes(16).toString('hex')}`;
      const onDisk = whenFileHas(envFile, `OPENROUTER_API_KEY=${value}\n`);
      const res = await fetch(url, { method: 'PUT', headers, body: JSON.stringify({ api_key: value }) });
      const t200 = performance.now();
      if (res.status !== 200) throw new Error(`PUT answered ${res.status}: ${await res.text()}`);
      await res.arrayBuffer();
      const tDisk = await onDisk;
      // The first 20 warm up the JIT and the connection pool.
      if (i >= 20) {
        if (tDisk <= t200) alreadyThere++;
        ms.push(Math.max(0, tDisk - t200));
      }
    }
  } finally {
    if (own) await sync.stop();
    await env.close();
  }
  return {
    measure: `PUT 200 -> new value in litellm.env (${ROTATIONS} sequential rotations, wait 0ms)`,
    p50_ms: round(pct(ms, 50)),
    p90_ms: round(pct(ms, 90)),
    p99_ms: round(pct(ms, 99)),
    max_ms: round(Math.max(...ms)),
    on_disk_before_200: alreadyThere,
    goal: 'p99 <= 50 ms',
    met: pct(ms, 99) <= 50 ? 'yes' : 'NO',
  };
}

function bigState(n: number): DesiredState {
  const providers = Array.from({ length: 50 }, (_, p) => ({ slug: `p${p}`, kind: p % 2 ? 'openai' : 'openrouter', apiBase: p % 5 ? null : `https://gw${p}.example/v1`, keyName: `k${p}`, enabled: true }));
  const models = Array.from({ length: n }, (_, i) => ({
      id: randomUUID(),
      modelName: `group-${i % 500}`,
      provider: `p${i % 50}`,
      model: `vendor/model-${i}`,
      apiBase: null,
      rpm: 100 + (i % 7),
      tpm: i % 3 ? 100_000 : null,
      litellmParams: { timeout: 30, max_retries: 2, extra_headers: { 'X-Team': `t${i % 9}` } },
      modelInfo: { mode: 'chat', tier: i % 2 ? 'gold' : 'silver' },
    }));
  return {
    keys: providers.map((p, i) => ({ name: p.keyName, envVar: `K${i}_API_KEY`, version: 1, value: `sk-${randomBytes(16).toString('hex')}`, fingerprint: `f${i}`, expiresAt: null })),
    providers,
    models,
    approvals: approvalsFor(providers, models),
    authRequired: false,
    routing: { aliases: Object.fromEntries(Array.from({ length: 50 }, (_, i) => [`alias-${i}`, `group-${i}`])), fallbacks: Object.fromEntries(Array.from({ length: 50 }, (_, i) => [`group-${i}`, [`group-${i + 1}`]])) },
  };
}

async function bigRender(): Promise<Array<Record<string, number | string>>> {
  const state = bigState(DEPLOYMENTS);
  const base = parseBaseConfig('litellm_settings:\n  drop_params: true\nrouter_settings:\n  routing_strategy: simple-shuffle\n', 'base.yaml');
  for (let i = 0; i < 5; i++) render(state, base, { modelsInConfig: true });
  const ms: number[] = [];
  let bytes = 0;
  for (let i = 0; i < 20; i++) {
    const t0 = performance.now();
    bytes = render(state, base, { modelsInConfig: true }).configYaml.length;
    ms.push(performance.now() - t0);
  }
  const rows: Array<Record<string, number | string>> = [
    {
      measure: `render() of ${DEPLOYMENTS} deployments (${Math.round(bytes / 1024)} KiB config.yaml), median of 20`,
      p50_ms: round(pct(ms, 50)),
      p99_ms: round(pct(ms, 99)),
      goal: '<= 100 ms',
      met: pct(ms, 50) <= 100 ? 'yes' : 'NO',
    },
  ];

  // The same size through the whole loop: read from Postgres, decrypt, render, re-parse check, write.
  const env = await startBenchKeyplane({ KEYPLANE_SYNC_WAIT: '0ms' });
  const { sync, own } = await attachSync(env.kp);
  try {
    const headers = { authorization: `Bearer ${env.token}`, 'content-type': 'application/json' };
    const put = await fetch(`${env.kp.url}/api/v1/admin/platform-keys/openrouter`, { method: 'PUT', headers, body: JSON.stringify({ api_key: 'sk-or-v1-bench-0000000000' }) });
    if (put.status !== 200) throw new Error(`PUT answered ${put.status}`);
    await env.kp.pool.query(
      `INSERT INTO models (id, model_name, provider, model, rpm, litellm_params, model_info)
       SELECT gen_random_uuid(), 'group-' || (i % 500), 'openrouter', 'vendor/model-' || i, 100, '{"timeout": 30}', '{"mode": "chat"}'
       FROM generate_series(1, $1) AS i`,
      [DEPLOYMENTS],
    );
    await sync.syncer.syncNow();
    const full: number[] = [];
    for (let i = 0; i < 5; i++) {
      // The NOTIFY of the change drives the render; its event carries the duration.
      const done = sync.events.waitFor('render:done', (r) => r.changed, 30_000);
      await env.kp.pool.query(`UPDATE models SET rpm = rpm + 1 WHERE id = (SELECT id FROM models ORDER BY id LIMIT 1)`);
      full.push((await done).durationMs);
    }
    rows.push({ measure: `whole render-check-write of ${DEPLOYMENTS} deployments from Postgres, median of 5`, p50_ms: round(pct(full, 50)), p99_ms: round(Math.max(...full)), goal: '(none)', met: '-' });
  } finally {
    if (own) await sync.stop();
    await env.close();
  }
  return rows;
}

async function countRenders(env: BenchEnv, sync: SyncRuntime, burst: () => Promise<void>, done: () => boolean): Promise<{ renders: number; burstMs: number }> {
  let renders = 0;
  const off = sync.events.on('render:done', () => renders++);
  const offFailed = sync.events.on('render:failed', () => renders++);
  const t0 = performance.now();
  await burst();
  const burstMs = performance.now() - t0;
  const deadline = Date.now() + 10_000;
  while (!done()) {
    if (Date.now() > deadline) throw new Error('the burst never reached the files');
    await new Promise((r) => setTimeout(r, 5));
  }
  // Past the max wait nothing more may render; wait it out before counting.
  await new Promise((r) => setTimeout(r, env.kp.settings.syncWait.maxMs + 200));
  off();
  offFailed();
  return { renders, burstMs };
}

async function burstRenders(): Promise<Array<Record<string, number | string>>> {
  const env = await startBenchKeyplane({ KEYPLANE_SYNC_WAIT: '50ms:500ms' });
  const { sync, own } = await attachSync(env.kp);
  const headers = { authorization: `Bearer ${env.token}`, 'content-type': 'application/json' };
  const configFile = path.join(env.kp.settings.outputDir, 'config.yaml');
  const envFile = path.join(env.kp.settings.outputDir, 'litellm.env');
  const rows: Array<Record<string, number | string>> = [];
  try {
    const put = await fetch(`${env.kp.url}/api/v1/admin/platform-keys/openrouter`, { method: 'PUT', headers, body: JSON.stringify({ api_key: 'sk-or-v1-bench-0000000000' }) });
    if (put.status !== 200) throw new Error(`PUT answered ${put.status}`);
    const ids: string[] = [];
    for (let i = 0; i < 100; i++) ids.push(randomUUID());
    await env.kp.pool.query(`INSERT INTO models (id, model_name, provider, model) SELECT unnest($1::uuid[]), 'm', 'openrouter', 'x/y'`, [ids]);
    await sync.syncer.syncNow();
    await new Promise((r) => setTimeout(r, 700));

    // 1,000 separate commits (each its own transaction and NOTIFY) from 20 connections.
    const db = await countRenders(
      env,
      sync,
      async () => {
        let next = 0;
        await Promise.all(
          Array.from({ length: 20 }, async () => {
            while (next < 1000) {
              const i = next++;
              await env.kp.pool.query('UPDATE models SET rpm = $2 WHERE id = $1', [ids[i % ids.length], i === 999 ? 999_999 : 1 + i]);
            }
          }),
        );
      },
      () => readFileSync(configFile, 'utf8').includes('rpm: 999999'),
    );
    rows.push({ measure: '1,000 committed changes (20 connections), wait 50ms:500ms', burst_ms: Math.round(db.burstMs), renders: db.renders, goal: '<= 3 renders', met: db.renders <= 3 ? 'yes' : 'NO' });

    // 1,000 PUTs through the admin API, 20 at a time: the API's own rate spreads the burst out.
    let last = '';
    const api = await countRenders(
      env,
      sync,
      async () => {
        let next = 0;
        await Promise.all(
          Array.from({ length: 20 }, async () => {
            while (next < 1000) {
              const i = next++;
              const value = `sk-or-v1-burst-${i}-${randomBytes(6).toString('hex')}`;
              const res = await fetch(`${env.kp.url}/api/v1/admin/platform-keys/openrouter`, { method: 'PUT', headers, body: JSON.stringify({ api_key: value }) });
              if (res.status !== 200) throw new Error(`PUT answered ${res.status}`);
              await res.arrayBuffer();
              if (i === 999) last = value;
            }
          }),
        );
        // The value of the last committed version is the one that must end up on disk.
        const dec = await fetch(`${env.kp.url}/api/v1/admin/platform-keys/openrouter/decrypted`, { headers });
        last = ((await dec.json()) as { api_key: string }).api_key;
      },
      () => readFileSync(envFile, 'utf8').includes(`OPENROUTER_API_KEY=${last}\n`),
    );
    rows.push({ measure: '1,000 PUTs through the API (20 at a time), wait 50ms:500ms', burst_ms: Math.round(api.burstMs), renders: api.renders, goal: '(API-rate bound)', met: '-' });
  } finally {
    if (own) await sync.stop();
    await env.close();
  }
  return rows;
}

async function main(): Promise<void> {
  const latency = await rotationLatency();
  console.log('bench:sync — latency');
  console.table([latency]);
  const renderRows = await bigRender();
  console.log('bench:sync — render size');
  console.table(renderRows);
  const burst = await burstRenders();
  console.log('bench:sync — burst');
  console.table(burst);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
