import { startTestApp, type TestApp } from './helpers/app';
import { createTestDatabase, type TestDatabase } from './helpers/db';
import { startFakeProvider, type FakeProvider } from './helpers/fake-provider';
import { recordEvents, until } from './helpers/wait';

/**
 * Issue 11, item 3: the recheck schedule of keys a probe disabled lives in the database. With the
 * shortest interval at 5 minutes, nothing but a new version (or a restart past the time) probes again
 * within these tests.
 */
describe('rechecks of disabled keys', () => {
  let fake: FakeProvider;
  let db: TestDatabase;
  let t: TestApp;
  const BAD = 'sk-recheck-revoked-value-00000001';
  const FIXED = 'sk-recheck-fixed-value-000000002';
  const ENV = { KEYPLANE_KEY_RECHECK: '5m' };

  const key = async (): Promise<Record<string, any>> => (await t.api().get('/api/v1/admin/platform-keys/solo').expect(200)).body;

  beforeAll(async () => {
    fake = await startFakeProvider();
    db = await createTestDatabase();
    t = await startTestApp({ db, env: { ...ENV, KEYPLANE_LITELLM_URL: fake.base('litellm') } });
    await t.api().put('/api/v1/admin/platform-keys/solo').send({ api_key: BAD }).expect(200);
    await t.api().put('/api/v1/admin/providers/solo').send({ kind: 'anthropic', api_base: fake.base('solo'), keys: [{ name: 'solo' }] }).expect(201);
    fake.acceptKeys('solo', [FIXED]);
  });
  afterAll(async () => {
    await t.close();
    await fake.close();
    await db.drop();
  });

  it('a probe disables the key and schedules its next probe (backoff from KEYPLANE_KEY_RECHECK)', async () => {
    const r = await t.api().post('/api/v1/admin/llm/health/check').expect(200);
    expect(r.body.keys).toEqual([expect.objectContaining({ name: 'solo', outcome: 'auth_failed', endpoint: 'GET /solo/v1/models', state: 'disabled' })]);
    const k = await key();
    expect(k).toMatchObject({ state: 'disabled', state_reason: 'auth_failed', health: { fail_streak: 1, ok_streak: 0 } });
    const inMs = Date.parse(k.health.next_probe_at) - Date.parse(k.health.checked_at);
    expect(inMs).toBeGreaterThanOrEqual(299_000);
    expect(inMs).toBeLessThanOrEqual(301_000);
  });

  it('a new version is probed at once, and does not bring the key back by itself', async () => {
    const results = recordEvents(t.kp.events, 'key:result');
    try {
      const sent = fake.requestsFor('solo').length;
      await t.api().put('/api/v1/admin/platform-keys/solo').send({ api_key: FIXED }).expect(200);
      const probed = await results.waitFor((p) => p.name === 'solo' && p.trigger === 'recheck', 5000);
      expect(probed).toMatchObject({ outcome: 'ok', state: 'disabled', changed: false });
      expect(fake.requestsFor('solo').slice(sent).map((q) => q.key)).toEqual([FIXED]);
      expect(await key()).toMatchObject({ state: 'disabled', state_reason: 'auth_failed', version: 2, health: { outcome: 'ok', key_version: 2, ok_streak: 1 } });
    } finally {
      results.stop();
    }
  });

  it('the schedule and the streak survive a restart: a key due while keyplane was down is probed at start and returns', async () => {
    await t.close();
    // The time came while no keyplane ran.
    await db.pool.query("UPDATE key_health SET next_probe_at = now() - interval '1 second' WHERE name = 'solo'");
    const sent = fake.requestsFor('solo').length;
    t = await startTestApp({ db, masterKey: t.masterKey, env: { ...ENV, KEYPLANE_LITELLM_URL: fake.base('litellm') } });
    await until('solo is active again', async () => (await key()).state === 'active');
    // One more good probe made two in a row (the first before the restart).
    expect(fake.requestsFor('solo').slice(sent).map((q) => q.key)).toEqual([FIXED]);
    expect((await key()).health).toMatchObject({ outcome: 'ok', ok_streak: 2, next_probe_at: null });
  });
});
