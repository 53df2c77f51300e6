import request from 'supertest';
import { TokensStore } from '../src/features/tokens/tokens-store';
import { startTestApp, type TestApp } from './helpers/app';

describe('POST /api/v1/admin/sync {"force_reload": true} is rate limited', () => {
  let a: TestApp;
  let b: TestApp;
  let operator: string;

  beforeAll(async () => {
    a = await startTestApp();
    b = await startTestApp({ db: a.db, masterKey: a.masterKey });
    operator = (await new TokensStore(a.kp.pool).create('force-operator', 'operator', 'test')).token;
  });
  afterAll(async () => {
    await b.close();
    await a.close();
  });

  const post = (app: TestApp, body: unknown) => request(app.kp.url!).post('/api/v1/admin/sync').set('Authorization', `Bearer ${operator}`).send(body as object);

  it("an operator's forced reloads: one per 30 s for the whole deployment: 429 with Retry-After that says why; plain renders are not limited", async () => {
    const handed = a.kp.events.waitFor('reload:done', () => true, 5000);
    await post(a, { force_reload: true }).expect(200);
    await handed;
    const reloadsBefore = (await a.kp.pool.query('SELECT count(*)::int AS n FROM reload_runs')).rows[0].n;

    const limited = await post(a, { force_reload: true }).expect(429);
    expect(limited.headers['content-type']).toMatch(/^application\/problem\+json/);
    const retryAfter = Number(limited.headers['retry-after']);
    expect(retryAfter).toBeGreaterThanOrEqual(1);
    expect(retryAfter).toBeLessThanOrEqual(30);
    expect(limited.body).toMatchObject({
      type: expect.stringMatching(/force-reload-limited$/),
      status: 429,
      detail: expect.stringContaining('a forced reload restarts LiteLLM, so one is allowed every 30 s for the whole deployment'),
    });
    // The other instance (a follower) shares the limit.
    await post(b, { force_reload: true }).expect(429);
    await post(a, {}).expect(200);
    await post(a, { force_reload: false }).expect(200);
    await a.kp.reloads!.whenIdle();
    expect((await a.kp.pool.query('SELECT count(*)::int AS n FROM reload_runs')).rows[0].n).toBe(reloadsBefore);
    const audit = await a.api().get('/api/v1/admin/audit?action=sync.render').expect(200);
    expect(audit.body.items.filter((i: { details: { force_reload: boolean } }) => i.details.force_reload)).toHaveLength(1);

    // An admin is not limited (and does not take the operators' turn).
    await a.api().post('/api/v1/admin/sync').send({ force_reload: true }).expect(200);
    await post(b, { force_reload: true }).expect(429);
    // Once the interval has passed, the next one goes through.
    await a.kp.pool.query(`UPDATE sync_state SET forced_reload_at = now() - interval '31 seconds'`);
    await post(a, { force_reload: true }).expect(200);
  });
});
