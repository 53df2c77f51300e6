import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import autocannon from 'autocannon';
import { Keyring } from '../../src/crypto/keyring';

/**
 * `npm run bench:api`: `keyplane serve` runs in its own process (on its embedded Postgres, sync loop
 * on, as deployed) and autocannon loads it from this one: 20 connections for 10 s each against a
 * masked GET of one platform key and a PUT rotation of it (each PUT a new encrypted version, an
 * audit row, and a render of LiteLLM's files). Goal on 2 cores: 1,500 GET/s and 400 PUT/s.
 */
const BIN = path.resolve(__dirname, '..', '..', 'bin', 'keyplane.js');

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

async function main(): Promise<void> {
  const seconds = Number(process.env.BENCH_SECONDS ?? 10);
  const dir = mkdtempSync(path.join(os.tmpdir(), 'keyplane-bench-api-'));
  const token = 'bench_' + randomBytes(16).toString('hex');
  const port = await freePort();
  const server = spawn(process.execPath, [BIN, 'serve'], {
    env: {
      PATH: process.env.PATH!,
      KEYPLANE_DATA_DIR: dir,
      KEYPLANE_LISTEN: `127.0.0.1:${port}`,
      KEYPLANE_MASTER_KEY: Keyring.generateSpec('bench'),
      KEYPLANE_ADMIN_TOKEN: token,
      KEYPLANE_LOG_LEVEL: 'warn',
      KEYPLANE_HEALTH_SCHEDULE: 'off',
      ...(process.env.KEYPLANE_SYNC_WAIT ? { KEYPLANE_SYNC_WAIT: process.env.KEYPLANE_SYNC_WAIT } : {}),
      ...(process.env.KEYPLANE_DATABASE_URL ? { KEYPLANE_DATABASE_URL: process.env.KEYPLANE_DATABASE_URL } : {}),
    },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  const base = `http://127.0.0.1:${port}`;
  const url = `${base}/api/v1/admin/platform-keys/openrouter`;
  const headers = { authorization: `Bearer ${token}`, 'content-type': 'application/json' };
  try {
    const deadline = Date.now() + 60_000;
    for (;;) {
      if (server.exitCode !== null) throw new Error(`keyplane exited with ${server.exitCode}`);
      if (await fetch(`${base}/readyz`).then((r) => r.ok, () => false)) break;
      if (Date.now() > deadline) throw new Error('keyplane did not get ready in 60 s');
      await new Promise((r) => setTimeout(r, 100));
    }
    const first = await fetch(url, { method: 'PUT', headers, body: JSON.stringify({ api_key: 'sk-or-v1-bench-000000000000' }) });
    if (first.status !== 200) throw new Error(`setup PUT answered ${first.status}`);
    const results: Array<Record<string, string | number>> = [];
    let n = 0;
    // Every rotation a new value, so that each one really changes LiteLLM's env file.
    const rotate = (req: autocannon.Request) => ({ ...req, body: JSON.stringify({ api_key: `sk-or-v1-bench-${process.pid}-${++n}` }) });
    const runs: Array<[string, Partial<autocannon.Options>]> = [
      ['GET masked', { method: 'GET' }],
      ['PUT rotate', { method: 'PUT', requests: [{ setupRequest: rotate }] }],
    ];
    for (const [label, opts] of runs) {
      const r = await autocannon({ url, connections: 20, duration: seconds, headers, ...opts });
      results.push({
        request: label,
        'req/s': Math.round(r.requests.average),
        'p50 ms': r.latency.p50,
        'p99 ms': r.latency.p99,
        requests: r.requests.total,
        'non-2xx/errors': r.non2xx + r.errors + r.timeouts,
      });
    }
    let versionCount = 0;
    for (let cursor: string | null = ''; cursor !== null; ) {
      const page = (await (await fetch(`${url}/versions?limit=1000${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`, { headers })).json()) as { items: unknown[]; next_cursor: string | null };
      versionCount += page.items.length;
      cursor = page.next_cursor;
    }
    const sync = (await (await fetch(`${base}/api/v1/admin/sync`, { headers })).json()) as { revision?: { revision?: number } };
    console.log(`bench:api: keyplane serve (own process, embedded Postgres), ${seconds} s each, 20 connections`);
    console.table(results);
    console.log(`versions written by the PUT run: ${versionCount - 1}; revisions of LiteLLM's files rendered meanwhile: ${sync.revision?.revision ?? 0}`);
  } finally {
    await new Promise<void>((resolve) => {
      if (server.exitCode !== null) return resolve();
      server.once('exit', () => resolve());
      server.kill('SIGTERM');
    });
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
