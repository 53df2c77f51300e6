/**
 * `npm run bench:health`: one health round over 1,000 providers (each with its own key) against a
 * fake provider that answers every request after 100 ms, at concurrency 50. The floor is
 * 1000 / 50 * 100 ms = 2 s; the goal is at most 3 s. The fake runs in a child process and Postgres
 * in its own, so the CPU time printed is keyplane's alone.
 *
 * Postgres: KEYPLANE_BENCH_DATABASE_URL (an admin URL; a scratch database is created and dropped),
 * else an embedded Postgres in a temp dir.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import client from 'prom-client';
import { Fingerprinter, Keyring, last4 } from '../../src/crypto/keyring';
import { platformKeyRef } from '../../src/crypto/secret-tables';
import { startEmbeddedPostgres } from '../../src/db/embedded';
import { migrate } from '../../src/db/migrator';
import { createPool, type Pool } from '../../src/db/pool';
import { PlatformKeysService } from '../../src/features/platform-keys/platform-keys-service';
import { HealthStore } from '../../src/health/health-store';
import { Prober, type RoundResult } from '../../src/health/prober';
import { createLogger, SecretRegistry } from '../../src/log';

const PROVIDERS = 1000;
const CONCURRENCY = 50;
const DELAY_MS = 100;
const GOAL_MS = 3000;

// The fake: every path answers 200 JSON after DELAY_MS; it prints its port once listening.
const FAKE_SERVER = `
const http = require('node:http');
const server = http.createServer((req, res) => {
  setTimeout(() => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(req.url.includes('/health/readiness') ? '{"status":"healthy","litellm_version":"bench"}' : '{"object":"list","data":[{"id":"m"}]}');
  }, ${DELAY_MS});
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

async function openDatabase(log: ReturnType<typeof createLogger>): Promise<{ pool: Pool; close: () => Promise<void> }> {
  const admin = process.env.KEYPLANE_BENCH_DATABASE_URL;
  if (admin) {
    const name = `kp_bench_${randomBytes(4).toString('hex')}`;
    const c = new pg.Client({ connectionString: admin });
    await c.connect();
    await c.query(`CREATE DATABASE ${name}`);
    await c.end();
    const u = new URL(admin);
    u.pathname = `/${name}`;
    const pool = createPool(u.toString(), { max: 10 });
    return {
      pool,
      close: async () => {
        await pool.end();
        const d = new pg.Client({ connectionString: admin });
        await d.connect();
        await d.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
        await d.end();
      },
    };
  }
  const dir = mkdtempSync(path.join(os.tmpdir(), 'keyplane-bench-pg-'));
  const db = await startEmbeddedPostgres(dir, log, { database: 'postgres' });
  const pool = createPool(db.url, { max: 10 });
  return {
    pool,
    close: async () => {
      await pool.end();
      await db.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** 1,000 providers, each with its own encrypted key, written straight to the tables (setup is not measured). */
async function seed(pool: Pool, keyring: Keyring, fingerprints: Fingerprinter, fakeUrl: string): Promise<void> {
  await pool.query('DELETE FROM models; DELETE FROM providers');
  const c = await pool.connect();
  try {
    await c.query('BEGIN');
    for (let i = 0; i < PROVIDERS; i++) {
      const name = `bench-${String(i).padStart(4, '0')}`;
      const value = `sk-bench-${randomBytes(16).toString('hex')}`;
      const { jwe, kid } = await keyring.encrypt(value, platformKeyRef(name, 1));
      await c.query('INSERT INTO platform_keys (name, env_var, current_version) VALUES ($1, $2, 1)', [name, `BENCH_${i}_API_KEY`]);
      await c.query(
        `INSERT INTO platform_key_versions (name, version, jwe, kid, fingerprint, last4, created_by) VALUES ($1, 1, $2, $3, $4, $5, 'bench')`,
        [name, jwe, kid, fingerprints.of(value), last4(value)],
      );
      await c.query('INSERT INTO providers (slug, kind, api_base, key_name) VALUES ($1, $2, $3, $1)', [name, i % 3 === 0 ? 'anthropic' : i % 3 === 1 ? 'gemini' : 'openai', `${fakeUrl}/${name}`]);
    }
    await c.query('COMMIT');
  } finally {
    c.release();
  }
}

async function measure(prober: Prober): Promise<{ result: RoundResult; wallMs: number; cpuMs: number; peakRssMb: number; peakHeapMb: number }> {
  let peakRss = 0;
  let peakHeap = 0;
  const sample = (): void => {
    const m = process.memoryUsage();
    peakRss = Math.max(peakRss, m.rss);
    peakHeap = Math.max(peakHeap, m.heapUsed);
  };
  const sampler = setInterval(sample, 10);
  sample();
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const result = await prober.runNow();
  const wallMs = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  clearInterval(sampler);
  sample();
  return { result, wallMs, cpuMs: (cpu.user + cpu.system) / 1000, peakRssMb: peakRss / 2 ** 20, peakHeapMb: peakHeap / 2 ** 20 };
}

async function main(): Promise<void> {
  const log = createLogger({ secrets: new SecretRegistry(), level: 'warn' });
  const fake = await startFake();
  const db = await openDatabase(log);
  try {
    await migrate(db.pool);
    const keyring = Keyring.parse(Keyring.generateSpec('bench'), new SecretRegistry());
    const fingerprints = new Fingerprinter(randomBytes(32));
    await seed(db.pool, keyring, fingerprints, fake.url);
    const prober = new Prober({
      store: new HealthStore(db.pool),
      keys: new PlatformKeysService(db.pool, keyring, fingerprints),
      log,
      registry: new client.Registry(),
      settings: {
        healthSchedule: '*/5 * * * *',
        healthConcurrency: CONCURRENCY,
        healthTimeoutMs: 10_000,
        healthFailThreshold: 2,
        healthRecoverThreshold: 2,
        healthRetentionMs: 7 * 86_400_000,
        litellmUrl: `${fake.url}/litellm`,
      },
    });
    console.log(`health round: ${PROVIDERS} providers (openai, anthropic, gemini; one key each), fake answers in ${DELAY_MS} ms, concurrency ${CONCURRENCY}`);
    console.log(`floor ${(PROVIDERS / CONCURRENCY) * DELAY_MS} ms, goal <= ${GOAL_MS} ms`);
    for (const label of ['first round (cold process)', 'second round (warm)']) {
      const m = await measure(prober);
      const healthy = m.result.providers.filter((p) => p.status === 'healthy').length;
      console.log(
        `${label}: wall ${m.wallMs.toFixed(0)} ms, keyplane CPU ${m.cpuMs.toFixed(0)} ms, peak RSS ${m.peakRssMb.toFixed(1)} MiB, peak heap ${m.peakHeapMb.toFixed(1)} MiB, ` +
          `${healthy}/${PROVIDERS} healthy, litellm ${m.result.litellm?.status} -> ${m.wallMs <= GOAL_MS ? 'within goal' : 'OVER GOAL'}`,
      );
    }
    console.log(`process maxRSS (resourceUsage, whole run incl. setup): ${(process.resourceUsage().maxRSS / 1024).toFixed(1)} MiB`);
    await prober.stop();
  } finally {
    await db.close();
    fake.child.kill();
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
