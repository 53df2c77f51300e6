import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { spawnEmbeddedPostgres, type EmbeddedCluster } from '../helpers/embedded-pg';
import { keyPath, startLoad, ValueMaker, type PutRecord } from './soak-clients';
import { JsonClient } from './soak-http';
import { startKeyplane, tail, type KeyplaneProcess } from './soak-procs';
import { restartPostgres, type RestartTimes, type StopMode } from './soak-restart';
import { checkEnvFile, fetchAudit, fetchKeyState, judgeAudit, judgeVersions, type Check, type KeyState } from './soak-verify';

/**
 * `npm run test:soak` (not part of `npm test`): `keyplane serve` in its own process on a Postgres
 * cluster the soak controls; 50 clients rotate 20 keys for 60 s, about half of the PUTs with an
 * If-Match that may be stale; Postgres is restarted under the load halfway through. Then every
 * stored version is traced to the request that sent it, the audit chain is verified, and
 * litellm.env must end with every key's last value. Prints the figures and one PASS/FAIL line per
 * check; exits 1 on any FAIL. SOAK_SECONDS, SOAK_CLIENTS, SOAK_KEYS, SOAK_RESTART_AT (seconds into
 * the load), SOAK_OUTAGE_MS and SOAK_IF_MATCH_RATE override the defaults for quick runs;
 * SOAK_PG_STOP=immediate makes the stop a crash-like one (see StopMode).
 */
function numberEnv(name: string, dflt: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return dflt;
  const n = Number(raw);
  if (!Number.isFinite(n) || n < 0) throw new Error(`${name}=${raw} is not a number`);
  return n;
}

const seconds = numberEnv('SOAK_SECONDS', 60);
const clients = numberEnv('SOAK_CLIENTS', 50);
const keyCount = numberEnv('SOAK_KEYS', 20);
const restartAt = numberEnv('SOAK_RESTART_AT', seconds / 2);
const outageMs = numberEnv('SOAK_OUTAGE_MS', 2_000);
const ifMatchRate = numberEnv('SOAK_IF_MATCH_RATE', 0.5);
const stopMode = (process.env.SOAK_PG_STOP || 'fast') as StopMode;
if (stopMode !== 'fast' && stopMode !== 'immediate') throw new Error(`SOAK_PG_STOP=${stopMode}: must be fast or immediate`);

const cleanups: Array<() => Promise<void>> = [];
async function cleanUp(): Promise<void> {
  while (cleanups.length) await cleanups.pop()!().catch((err: unknown) => console.error('soak: cleanup:', err));
}

const percentile = (sorted: number[], p: number): number => sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] ?? NaN;
const ms = (x: number | undefined): string => (x === undefined || Number.isNaN(x) ? 'n/a' : `${Math.round(x)} ms`);

function countBy<T>(list: T[], key: (t: T) => string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const t of list) out[key(t)] = (out[key(t)] ?? 0) + 1;
  return out;
}

async function renders(kp: KeyplaneProcess, admin: JsonClient): Promise<string> {
  const text = await fetch(`${kp.base}/metrics`).then((r) => r.text());
  const counts = text
    .split('\n')
    .filter((l) => l.startsWith('keyplane_sync_renders_total{'))
    .map((l) => `${l.slice(l.indexOf('"') + 1, l.lastIndexOf('"'))} ${l.slice(l.lastIndexOf(' ') + 1)}`);
  const sync = (await admin.expect(200, 'GET', '/api/v1/admin/sync')).body as { revision?: { revision?: number } | null; last_render?: { status?: string } | null };
  return `renders ${counts.join(', ') || 'none counted'}; latest revision of LiteLLM's files ${sync.revision?.revision ?? 0}; last render ${sync.last_render?.status ?? 'none'}`;
}

async function main(): Promise<number> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'keyplane-soak-'));
  cleanups.push(async () => rmSync(dir, { recursive: true, force: true }));
  const adminToken = 'adm_' + randomBytes(24).toString('base64url');
  const run = randomBytes(3).toString('hex');
  const values = new ValueMaker(`sk-soak-${run}`);
  const keys = Array.from({ length: keyCount }, (_, i) => `soak-${String(i).padStart(2, '0')}`);

  // Its own temp dir: as root, Postgres runs as `postgres`, which must be able to pass through it.
  const pgDir = mkdtempSync(path.join(os.tmpdir(), 'keyplane-soak-pg-'));
  cleanups.push(async () => rmSync(pgDir, { recursive: true, force: true }));
  const cluster: EmbeddedCluster = await spawnEmbeddedPostgres(pgDir);
  cleanups.push(() => cluster.close());
  const kp = await startKeyplane({ dir, databaseUrl: cluster.url, adminToken, env: process.env.KEYPLANE_SYNC_WAIT ? { KEYPLANE_SYNC_WAIT: process.env.KEYPLANE_SYNC_WAIT } : {} });
  cleanups.push(() => kp.stop());
  const admin = new JsonClient(kp.base, adminToken);
  cleanups.push(async () => admin.close());

  // Clients rotate as an operator, whose token is looked up in the database on every request.
  const operator = (await admin.expect(201, 'POST', '/api/v1/admin/tokens', { body: { name: 'soak', role: 'operator' } })).body as { token: string };
  const records: PutRecord[] = [];
  for (const key of keys) {
    const { tag, value } = values.next(key, -1);
    const startedAt = performance.now();
    const res = await admin.expect(200, 'PUT', keyPath(key), { body: { api_key: value } });
    records.push({ client: -1, key, tag, value, startedAt, endedAt: performance.now(), status: 200, version: (res.body as { version: number }).version, fingerprint: (res.body as { fingerprint: string }).fingerprint });
  }
  const rssAtStart = kp.peakRssKiB();

  console.log(`soak: ${clients} clients rotate ${keyCount} keys for ${seconds} s (If-Match on ${Math.round(ifMatchRate * 100)}% of PUTs); Postgres restarted (${stopMode} stop) at ${restartAt} s, held down ${outageMs} ms; keyplane pid ${kp.proc.pid}`);
  const loadStart = performance.now();
  const load = startLoad({ base: kp.base, token: operator.token, clients, keys, values, ifMatchRate, startVersion: 1 });
  cleanups.push(async () => {
    load.stop();
    await load.done;
  });
  const probe = new JsonClient(kp.base, adminToken);
  cleanups.push(async () => probe.close());
  let restart: RestartTimes | undefined;
  const restarted = (async () => {
    await new Promise((r) => setTimeout(r, restartAt * 1000));
    if (restartAt < seconds) restart = await restartPostgres(cluster, probe, { holdMs: outageMs, mode: stopMode, pgDataDir: path.join(pgDir, 'pg') });
  })();
  // Both the timer and the restart run out before the load stops; a restart that fails ends the soak.
  await Promise.all([new Promise((r) => setTimeout(r, seconds * 1000)), restarted]);
  load.stop();
  await load.done;
  const loadEnd = performance.now();
  records.push(...load.records);
  const loadRecords = load.records;
  const peakRss = kp.peakRssKiB();

  // Figures.
  const elapsed = (loadEnd - loadStart) / 1000;
  const ok = loadRecords.filter((r) => r.status === 200);
  const okMs = ok.map((r) => r.endedAt - r.startedAt).sort((a, b) => a - b);
  const kind = (r: PutRecord): string => (r.status === 0 ? `network ${r.code}` : r.status === 200 ? '200' : `${r.status} ${r.problem ?? ''}`.trim());
  console.log(`accepted changes: ${ok.length} in ${elapsed.toFixed(1)} s = ${(ok.length / elapsed).toFixed(1)}/s (of ${loadRecords.length} PUTs)`);
  console.log(`latency of accepted PUTs: p50 ${okMs.length ? percentile(okMs, 50).toFixed(1) : 'n/a'} ms, p99 ${okMs.length ? percentile(okMs, 99).toFixed(1) : 'n/a'} ms, max ${okMs.length ? okMs[okMs.length - 1]!.toFixed(1) : 'n/a'} ms`);
  console.log(`answers by kind: ${JSON.stringify(countBy(loadRecords, kind))}`);
  console.log(await renders(kp, admin));
  console.log(`peak RSS of keyplane (VmHWM): ${peakRss ? (peakRss / 1024).toFixed(1) : 'n/a'} MiB (${rssAtStart ? (rssAtStart / 1024).toFixed(1) : 'n/a'} MiB before the load)`);
  const checks: Check[] = [];
  const unexpected = loadRecords.filter((r) => r.status !== 200 && r.status !== 412 && r.status !== 503);
  checks.push({ ok: unexpected.length === 0, what: 'every answer is 200, 412 or 503 (no other status, no network error)', detail: unexpected.length ? JSON.stringify(countBy(unexpected, kind)) : 'yes' });
  if (restart) {
    const t = restart;
    const since = (x: number | undefined): string => ms(x === undefined ? undefined : x - t.stopBegin);
    const firstOk = ok.filter((r) => r.endedAt >= t.started).sort((a, b) => a.endedAt - b.endedAt)[0];
    const unavailable = loadRecords.filter((r) => r.status === 503);
    const recovered = firstOk?.endedAt ?? Infinity;
    const outside = unavailable.filter((r) => r.endedAt < t.stopBegin || r.startedAt > recovered);
    console.log(
      `Postgres restart at ${((t.stopBegin - loadStart) / 1000).toFixed(1)} s: stop took ${ms(t.stopped - t.stopBegin)}, down (stop begun to accepting connections) ${ms(t.started - t.stopBegin)}, start took ${ms(t.started - t.startBegin)}; ` +
        `/readyz 503 from ${since(t.readyzDown)} after the stop began`,
    );
    console.log(`recovery after Postgres started: first 200 PUT after ${ms(firstOk ? firstOk.endedAt - t.started : undefined)}, /readyz 200 after ${ms(t.readyzUp === undefined ? undefined : t.readyzUp - t.started)}`);
    console.log(`503s: ${unavailable.length} (${JSON.stringify(countBy(unavailable, kind))}), ${outside.length} of them outside the outage`);
    checks.push({ ok: firstOk !== undefined && t.readyzUp !== undefined, what: 'keyplane recovers from the Postgres restart on its own (a 200 PUT and /readyz 200)', detail: `first 200 PUT after ${ms(firstOk ? firstOk.endedAt - t.started : undefined)}` });
    checks.push({ ok: outside.length === 0, what: 'no 503 outside the outage (before the stop, or begun after the first 200 that followed the start)', detail: outside.length ? JSON.stringify(countBy(outside, kind)) : 'none' });
  }

  // Verification: what keyplane holds, against what every client was told.
  const states = new Map<string, KeyState>();
  for (const key of keys) states.set(key, await fetchKeyState(admin, key));
  const versions = judgeVersions(states, records);
  checks.push(...versions.checks);
  const f = versions.figures;
  console.log(`versions: ${f.stored} stored (${keyCount} written before the load), ${f.acknowledged} acknowledged with 200; outcome unknown to the client: ${f.unknownLanded} stored, ${f.unknownNotLanded} not stored`);
  checks.push(await checkEnvFile(kp.outputDir, states, loadEnd, 30_000));
  const audit = await fetchAudit(admin, keys);
  checks.push(...judgeAudit(audit.verdict, states, audit.audits));
  const log = readFileSync(kp.logFile, 'utf8');
  checks.push({ ok: !log.includes(values.prefix), what: "no key value in keyplane's log", detail: `${log.length} bytes scanned` });

  for (const c of checks) console.log(`${c.ok ? 'PASS' : 'FAIL'} ${c.what}: ${c.detail}`);
  const failed = checks.filter((c) => !c.ok).length;
  if (failed) console.log(`soak: ${failed} FAIL; keyplane's log ends:\n${tail(kp.logFile)}`);
  else console.log('soak: all PASS');
  return failed ? 1 : 0;
}

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    console.error(`soak: ${signal}, stopping everything`);
    void cleanUp().finally(() => process.exit(130));
  });
}

main()
  .then(
    async (code) => {
      await cleanUp();
      process.exit(code);
    },
    async (err: unknown) => {
      console.error('soak: FAIL', err);
      await cleanUp();
      process.exit(1);
    },
  );
