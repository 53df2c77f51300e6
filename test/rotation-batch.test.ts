import { CLI_PRINCIPAL } from '../src/http/principal';
import { startTestApp, type TestApp } from './helpers/app';

/** Issue 8 item 14: one bad rotation fails that rotation alone, never the others written with it. */

const value = (i: number): string => `sk-batch-test-${String(i).padStart(4, '0')}-aaaaaaaa`;

describe('rotations written together', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp();
  });
  afterAll(async () => {
    await t.close();
  });

  it('40 concurrent PUTs to one key, one with a year-0 expiry: that one is a 400, the 39 others get consecutive versions', async () => {
    await t.api().put('/api/v1/admin/platform-keys/busy').send({ api_key: value(0) }).expect(200);
    const results = await Promise.all(
      Array.from({ length: 40 }, (_, i) =>
        t.api().put('/api/v1/admin/platform-keys/busy').send({ api_key: value(i + 1), ...(i === 17 ? { expires_at: '0000-01-01T00:00:00Z' } : {}) }),
      ),
    );
    const statuses = results.map((r) => r.status);
    expect(statuses.filter((s) => s === 400)).toHaveLength(1);
    expect(statuses[17]).toBe(400);
    expect(statuses.filter((s) => s === 200)).toHaveLength(39);
    const versions = results.filter((r) => r.status === 200).map((r) => r.body.version as number).sort((a, b) => a - b);
    expect(versions).toEqual(Array.from({ length: 39 }, (_, i) => i + 2));
    const listed = await t.api().get('/api/v1/admin/platform-keys/busy/versions?limit=1000').expect(200);
    expect(listed.body.items.map((v: { version: number }) => v.version)).toEqual(Array.from({ length: 40 }, (_, i) => 40 - i));
    expect((await t.api().get('/api/v1/admin/audit/verify').expect(200)).body.ok).toBe(true);
  });

  it('a value Postgres refuses, reaching a batch, fails alone: the rest of the batch is written one by one', async () => {
    const svc = t.kp.platformKeys;
    const ctx = { principal: CLI_PRINCIPAL, requestId: 'batch-test' };
    await svc.put('lower', { api_key: value(100) }, ctx);
    // All queued in one tick, behind one drain: one batch, one statement. A year-0 timestamp passes
    // `new Date()` but not Postgres (the API refuses it first; this goes around the API).
    const puts = Array.from({ length: 12 }, (_, i) => svc.put('lower', { api_key: value(101 + i), ...(i === 5 ? { expires_at: '0000-01-01T00:00:00Z' } : {}) }, ctx));
    const settled = await Promise.allSettled(puts);
    expect(settled[5]!.status).toBe('rejected');
    const ok = settled.filter((s): s is PromiseFulfilledResult<Awaited<(typeof puts)[number]>> => s.status === 'fulfilled');
    expect(ok).toHaveLength(11);
    expect(ok.map((s) => s.value.version).sort((a, b) => a - b)).toEqual(Array.from({ length: 11 }, (_, i) => i + 2));
    const { rows } = await t.db.pool.query<{ version: number; fingerprint: string }>("SELECT version, fingerprint FROM platform_key_versions WHERE name = 'lower' ORDER BY version");
    expect(rows.map((r) => r.version)).toEqual(Array.from({ length: 12 }, (_, i) => i + 1));
    // Each acknowledged version holds the value its caller sent.
    for (const s of ok) expect(rows.find((r) => r.version === s.value.version)!.fingerprint).toBe(s.value.fingerprint);
    const secrets = await svc.currentSecrets();
    expect(secrets.find((k) => k.name === 'lower')!.version).toBe(12);
    expect((await t.api().get('/api/v1/admin/audit/verify').expect(200)).body.ok).toBe(true);
  });
});
