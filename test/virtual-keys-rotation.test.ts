import { createHash } from 'node:crypto';
import type { AlertEvent, Alerter } from '../src/alerts/alerter';
import { Keyring } from '../src/crypto/keyring';
import { VirtualKeyWorker } from '../src/features/virtual-keys/virtual-key-worker';
import { startTestApp, type TestApp } from './helpers/app';
import { createTestDatabase, type TestDatabase } from './helpers/db';
import { FakeLitellm } from './helpers/fake-litellm';
import { nextEvent, until } from './helpers/wait';

/** Issue 12, item 2: rotating a virtual key with an overlap, the old key deleted by keyplane at its deadline. */

const MASTER = 'sk-litellm-master-rot-0001';
const sha256 = (s: string): string => createHash('sha256').update(s).digest('hex');
const base = '/api/v1/admin/virtual-keys';

type Rotation = { rotation_id: number; status: string; old_token: string; new_token: string; delete_at: string; deleted_at: string | null; attempts: number; last_error: string | null };

async function create(t: TestApp, alias: string, body: Record<string, unknown> = {}): Promise<{ key: string; token: string }> {
  const res = await t.api().post(base).send({ alias, ...body }).expect(201);
  return { key: res.body.key, token: res.body.token };
}

async function rotationRow(db: TestDatabase, id: number): Promise<{ status: string; delete_at: Date; deleted_at: Date | null; attempts: number }> {
  return (await db.pool.query('SELECT status, delete_at, deleted_at, attempts FROM virtual_key_rotations WHERE id = $1', [id])).rows[0];
}

/** The deadline has passed, as far as the database's clock goes (the deadline is only there). */
async function deadlinePassed(db: TestDatabase, id: number): Promise<void> {
  await db.pool.query(`UPDATE virtual_key_rotations SET delete_at = now() - interval '1 second' WHERE id = $1`, [id]);
}

/** One full look of the instance's worker that started after now (a look already running may have started before). */
async function look(t: TestApp): Promise<{ leader: boolean; deleted: number; failed: number }> {
  let out: { leader: boolean; deleted: number; failed: number } | undefined;
  for (let i = 0; i < 2; i++) {
    const looked = nextEvent(t.kp.events, 'virtual-key:looked');
    t.kp.virtualKeyWorker!.nudge();
    out = await looked;
  }
  return out!;
}

describe('rotating a virtual key', () => {
  let fake: FakeLitellm;
  let t: TestApp;

  beforeAll(async () => {
    fake = await FakeLitellm.start({ masterKey: MASTER });
    t = await startTestApp({ env: { KEYPLANE_LITELLM_URL: fake.url, KEYPLANE_LITELLM_MASTER_KEY: MASTER }, shownOnce: () => fake.vkeys.issued });
  });
  afterAll(async () => {
    await t?.close();
    await fake?.stop();
  });

  it('makes a new key with the same settings and spend; the old one works until its deadline and is deleted only then', async () => {
    const old = await create(t, 'app', { models: ['gpt-4o-mini'], max_budget: 20, budget_duration: '30d', rpm_limit: 30, metadata: { team: 'app' } });
    fake.vkeys.keys.get(old.token)!.spend = 2.5;
    const res = await t.api().post(`${base}/app/rotate`).send({ grace_period: '1h' }).expect(201);
    const key = res.body.key as string;
    expect(key).not.toBe(old.key);
    const rot = res.body.rotation as Rotation;
    expect(res.body).toMatchObject({ alias: 'app', status: 'active', token: sha256(key), spend: 2.5, models: ['gpt-4o-mini'], max_budget: 20 });
    expect(rot).toMatchObject({ status: 'retiring', old_token: old.token, new_token: sha256(key), grace_period: '1h' });
    expect(Date.parse(rot.delete_at) - Date.now()).toBeGreaterThan(3_500_000);
    expect(res.body.retiring).toEqual([expect.objectContaining({ rotation_id: rot.rotation_id, token: old.token, delete_at: rot.delete_at })]);
    expect(res.body.message).toContain(`stays valid until ${rot.delete_at}`);
    // In LiteLLM: both keys work; the alias is the new key's, the old one carries a retiring alias.
    expect(fake.vkeys.accepts(old.key) && fake.vkeys.accepts(key)).toBe(true);
    expect(fake.vkeys.keys.get(sha256(key))).toMatchObject({ key_alias: 'app', models: ['gpt-4o-mini'], max_budget: 20, budget_duration: '30d', rpm_limit: 30, spend: 2.5, metadata: { team: 'app', keyplane_op: `rotate:${rot.rotation_id}` } });
    expect(fake.vkeys.keys.get(old.token)!.key_alias).toBe(`app.retiring-${rot.rotation_id}`);

    // The leader looks, and leaves the old key alone before its deadline.
    expect(await look(t)).toMatchObject({ leader: true, deleted: 0 });
    expect(fake.vkeys.accepts(old.key)).toBe(true);
    // The deadline passes: the old key is deleted, the new one stays.
    await deadlinePassed(t.db, rot.rotation_id);
    const deleted = nextEvent(t.kp.events, 'virtual-key:old-deleted', (e) => e.rotation_id === rot.rotation_id);
    t.kp.virtualKeyWorker!.nudge();
    await deleted;
    expect(fake.vkeys.accepts(old.key)).toBe(false);
    expect(fake.vkeys.accepts(key)).toBe(true);
    expect(await rotationRow(t.db, rot.rotation_id)).toMatchObject({ status: 'done', deleted_at: expect.any(Date) });
    expect((await t.api().get(`${base}/app`).expect(200)).body.retiring).toEqual([]);
    const audit = await t.db.pool.query(`SELECT action, actor FROM audit_log WHERE target = 'virtual_key/app' ORDER BY id`);
    expect(audit.rows).toEqual([
      { action: 'virtual_key.create', actor: 'bootstrap' },
      { action: 'virtual_key.rotate', actor: 'bootstrap' },
      { action: 'virtual_key.old_key_deleted', actor: 'keyplane' },
    ]);
  });

  it('with a short grace period the leader deletes the old key at the deadline on its own (no nudge)', async () => {
    const old = await create(t, 'short');
    const res = await t.api().post(`${base}/short/rotate`).send({ grace_period: '1500ms' }).expect(201);
    const deleteAt = Date.parse(res.body.rotation.delete_at);
    expect(fake.vkeys.accepts(old.key)).toBe(true);
    await until('the old key is deleted', () => !fake.vkeys.accepts(old.key), 15_000);
    expect(Date.now()).toBeGreaterThanOrEqual(deleteAt);
    expect(fake.vkeys.accepts(res.body.key)).toBe(true);
  });

  it('is idempotent: a retry with the same Idempotency-Key answers the same rotation without the key, never a third key', async () => {
    const old = await create(t, 'idem');
    const issued = fake.vkeys.issued.length;
    const first = await t.api().post(`${base}/idem/rotate`).set('Idempotency-Key', 'rot-idem-1').send({ grace_period: '2h' }).expect(201);
    const again = await t.api().post(`${base}/idem/rotate`).set('Idempotency-Key', 'rot-idem-1').send({ grace_period: '2h' }).expect(200);
    expect(again.headers['idempotent-replayed']).toBe('true');
    expect(again.body).toMatchObject({ key: null, replayed: true, alias: 'idem', token: first.body.token, rotation: first.body.rotation });
    // What a client that lost the first answer needs: the key is not kept, nobody holds it, what to do, and how long the old one lasts.
    expect(again.body.message).toContain('was shown once');
    expect(again.body.message).toContain('nobody holds that key: rotate again with a new Idempotency-Key');
    expect(again.body.message).toContain(`stays valid until ${first.body.rotation.delete_at}`);
    expect(fake.vkeys.issued.length).toBe(issued + 1);

    const reused = await t.api().post(`${base}/idem/rotate`).set('Idempotency-Key', 'rot-idem-1').send({ grace_period: '5m' }).expect(422);
    expect(reused.body).toMatchObject({ type: 'https://keyplane.dev/problems/idempotency-key-reused', rotation_id: first.body.rotation.rotation_id });
    // Two at once with one key: one rotation.
    const both = await Promise.all([0, 1].map(() => t.api().post(`${base}/idem/rotate`).set('Idempotency-Key', 'rot-idem-2').send({})));
    expect(both.map((r) => r.status).sort()).toEqual(expect.arrayContaining([201]));
    expect(both.filter((r) => r.status === 201)).toHaveLength(1);
    for (const r of both.filter((x) => x.status !== 201)) expect([200, 409]).toContain(r.status);
    expect(fake.vkeys.issued.length).toBe(issued + 2);
    // Every key this alias ever had still works: nothing was deleted early.
    expect(fake.vkeys.accepts(old.key)).toBe(true);
  });

  it('changes and deletes reach the earlier key still in its grace period', async () => {
    const old = await create(t, 'overlap', { rpm_limit: 100 });
    const res = await t.api().post(`${base}/overlap/rotate`).send({ grace_period: '1h' }).expect(201);
    await t.api().patch(`${base}/overlap`).send({ rpm_limit: 5 }).expect(200);
    expect(fake.vkeys.keys.get(old.token)!.rpm_limit).toBe(5);
    expect(fake.vkeys.keys.get(res.body.token)!.rpm_limit).toBe(5);
    await t.api().delete(`${base}/overlap`).expect(204);
    expect(fake.vkeys.accepts(old.key) || fake.vkeys.accepts(res.body.key)).toBe(false);
    expect(await rotationRow(t.db, res.body.rotation.rotation_id)).toMatchObject({ status: 'done' });
  });

  it('a key deleted in LiteLLM cannot be rotated: 409, and nothing is left behind', async () => {
    const old = await create(t, 'lost');
    fake.vkeys.keys.delete(old.token);
    const issued = fake.vkeys.issued.length;
    const res = await t.api().post(`${base}/lost/rotate`).send({}).expect(409);
    expect(res.body.type).toBe('https://keyplane.dev/problems/virtual-key-gone');
    expect(fake.vkeys.issued.length).toBe(issued);
    expect((await t.db.pool.query(`SELECT count(*)::int AS n FROM virtual_key_rotations WHERE alias = 'lost'`)).rows[0].n).toBe(0);
  });
});

describe('the deadline survives a restart and a change of leader', () => {
  let fake: FakeLitellm;
  let db: TestDatabase;
  const apps: TestApp[] = [];
  const env = (): Record<string, string> => ({ KEYPLANE_LITELLM_URL: fake.url, KEYPLANE_LITELLM_MASTER_KEY: MASTER });
  // Every instance on one database runs with the same master key.
  const masterKey = Keyring.generateSpec('test');
  const start = async (id: string): Promise<TestApp> => {
    const a = await startTestApp({ db, env: { ...env(), KEYPLANE_INSTANCE_ID: id }, masterKey, shownOnce: () => fake.vkeys.issued });
    apps.push(a);
    return a;
  };
  const close = async (a: TestApp): Promise<void> => {
    apps.splice(apps.indexOf(a), 1);
    await a.close();
  };

  beforeAll(async () => {
    fake = await FakeLitellm.start({ masterKey: MASTER });
    db = await createTestDatabase();
  });
  afterAll(async () => {
    for (const a of apps.reverse()) await a.close().catch(() => undefined);
    await fake?.stop();
    await db?.drop();
  });

  it('a keyplane started after the first stopped deletes the old key at its deadline', async () => {
    const first = await start('first');
    const old = await create(first, 'restart');
    const res = await first.api().post(`${base}/restart/rotate`).send({ grace_period: '1h' }).expect(201);
    const id = res.body.rotation.rotation_id as number;
    await close(first);
    // The deadline passes while no keyplane runs: it is only in the database.
    await deadlinePassed(db, id);
    expect(fake.vkeys.accepts(old.key)).toBe(true);
    const second = await start('second');
    await until('the rotation is done', async () => (await rotationRow(db, id)).status === 'done');
    expect(fake.vkeys.accepts(old.key)).toBe(false);
    expect(fake.vkeys.accepts(res.body.key)).toBe(true);
    await close(second);
  });

  it('only the leader deletes; when it stops, the new leader does', async () => {
    const a = await start('lead-a');
    const b = await start('lead-b');
    expect(a.kp.sync!.leader.isLeader).toBe(true);
    expect(b.kp.sync!.leader.isLeader).toBe(false);
    // Rotated through the follower: the deadline is shared through the database.
    const old = await create(b, 'leader');
    const res = await b.api().post(`${base}/leader/rotate`).send({ grace_period: '1h' }).expect(201);
    const id = res.body.rotation.rotation_id as number;
    // The leader goes on leading but stops deleting; the follower must not step in.
    await a.kp.virtualKeyWorker!.stop();
    await deadlinePassed(db, id);
    expect(await look(b)).toMatchObject({ leader: false, deleted: 0 });
    expect(fake.vkeys.accepts(old.key)).toBe(true);
    // The leader stops: b leads and deletes.
    const deleted = nextEvent(b.kp.events, 'virtual-key:old-deleted', (e) => e.rotation_id === id, 20_000);
    await close(a);
    await deleted;
    expect(b.kp.sync!.leader.isLeader).toBe(true);
    expect(fake.vkeys.accepts(old.key)).toBe(false);
    expect(fake.vkeys.accepts(res.body.key)).toBe(true);
  });
});

describe('the deletion worker: retries, alerts, and what a crash left', () => {
  let fake: FakeLitellm;
  let t: TestApp;
  let worker: VirtualKeyWorker;
  const alerts: Array<Omit<AlertEvent, 'at' | 'instance'>> = [];
  const alerter: Alerter = { send: async (e) => void alerts.push(e) };

  beforeAll(async () => {
    fake = await FakeLitellm.start({ masterKey: MASTER });
    t = await startTestApp({ env: { KEYPLANE_LITELLM_URL: fake.url, KEYPLANE_LITELLM_MASTER_KEY: MASTER }, shownOnce: () => fake.vkeys.issued });
    // The app's own worker is swapped for one with short retries and no wait before taking up what a crash left.
    await t.kp.virtualKeyWorker!.stop();
    worker = new VirtualKeyWorker({
      store: t.kp.virtualKeys.store,
      keys: t.kp.virtualKeys,
      litellm: t.kp.virtualKeys.litellm,
      rotations: t.kp.virtualKeyRotations,
      alerter,
      events: t.kp.events,
      isLeader: () => true,
      log: t.kp.log,
      retryBaseMs: 20,
      alertAfter: 3,
      staleMs: 0,
    });
  });
  afterAll(async () => {
    await worker?.stop();
    await t?.close();
    await fake?.stop();
  });

  it('a deletion LiteLLM fails is tried again with backoff, alerted after 3 failures, and done once LiteLLM works', async () => {
    const old = await create(t, 'flaky');
    fake.vkeys.failNextDeletes(4);
    const res = await t.api().post(`${base}/flaky/rotate`).send({ grace_period: '0s' }).expect(201);
    const id = res.body.rotation.rotation_id as number;
    const firstFailure = nextEvent(t.kp.events, 'virtual-key:deletion-failed', (e) => e.rotation_id === id);
    const deleted = nextEvent(t.kp.events, 'virtual-key:old-deleted', (e) => e.rotation_id === id);
    worker.start();
    expect(await firstFailure).toMatchObject({ attempts: 1 });
    await deleted;
    expect(fake.vkeys.accepts(old.key)).toBe(false);
    expect(await rotationRow(t.db, id)).toMatchObject({ status: 'done', attempts: 4 });
    expect(alerts.filter((a) => a.rotation_id === id)).toEqual([
      expect.objectContaining({ type: 'virtual_key.deletion_failed', alias: 'flaky', attempts: 3, token: old.token, error: expect.stringContaining("Can't reach database server") }),
      expect.objectContaining({ type: 'virtual_key.deletion_recovered', alias: 'flaky', attempts: 5 }),
    ]);
    const errors = t.logs().split('\n').filter((l) => l.includes('"level":"error"'));
    expect(errors).toEqual([expect.stringContaining('virtual key flaky: the old key could not be deleted in LiteLLM (3 tries)')]);
    const { rows } = await t.db.pool.query(`SELECT count(*)::int AS n FROM audit_log WHERE action = 'virtual_key.old_key_deleted' AND details->>'rotation_id' = $1`, [String(id)]);
    expect(rows[0].n).toBe(1);
  });

  it('undoes a rotation whose new key was made but whose answer was lost, once LiteLLM answers again', async () => {
    const old = await create(t, 'crashed-rot');
    const issued = fake.vkeys.issued.length;
    await worker.stop();
    // The rename is answered; the key is made but its answer is lost, and LiteLLM stays away a while.
    fake.cutAfterWrites(2);
    const res = await t.api().post(`${base}/crashed-rot/rotate`).send({ grace_period: '1h' }).expect(502);
    expect(res.body.type).toBe('https://keyplane.dev/problems/litellm-unreachable');
    expect(fake.vkeys.issued.length).toBe(issued + 1);
    const orphan = fake.vkeys.issued.at(-1)!;
    expect(fake.vkeys.accepts(orphan)).toBe(true);
    // Nothing more can happen to the alias until it is undone.
    expect((await t.api().patch(`${base}/crashed-rot`).send({ rpm_limit: 1 }).expect(409)).body.detail).toMatch(/is being rotated/);
    fake.heal();
    const looked = nextEvent(t.kp.events, 'virtual-key:looked', (e) => e.leader);
    worker.start();
    await looked;
    // The key nobody received is deleted; the old key is whole again, under its own alias.
    expect(fake.vkeys.accepts(orphan)).toBe(false);
    expect(fake.vkeys.accepts(old.key)).toBe(true);
    expect(fake.vkeys.keys.get(old.token)!.key_alias).toBe('crashed-rot');
    expect((await t.db.pool.query(`SELECT count(*)::int AS n FROM virtual_key_rotations WHERE alias = 'crashed-rot'`)).rows[0].n).toBe(0);
    expect((await t.db.pool.query(`SELECT count(*)::int AS n FROM audit_log WHERE action = 'virtual_key.rotation_abandoned'`)).rows[0].n).toBe(1);
    expect((await t.api().get(`${base}/crashed-rot`).expect(200)).body).toMatchObject({ status: 'active', token: old.token });
    await t.api().post(`${base}/crashed-rot/rotate`).send({ grace_period: '1h' }).expect(201);
  });

  it('undoes a create whose key was made but whose answer was lost', async () => {
    await worker.stop();
    const issued = fake.vkeys.issued.length;
    fake.cutAfterWrites(1);
    await t.api().post(base).send({ alias: 'crashed-create' }).expect(502);
    const orphan = fake.vkeys.issued.at(-1)!;
    expect(fake.vkeys.issued.length).toBe(issued + 1);
    expect((await t.api().get(`${base}/crashed-create`).expect(200)).body.status).toBe('creating');
    expect((await t.api().post(base).send({ alias: 'crashed-create' }).expect(409)).body.detail).toMatch(/did not finish/);
    fake.heal();
    const looked = nextEvent(t.kp.events, 'virtual-key:looked', (e) => e.leader);
    worker.start();
    await looked;
    expect(fake.vkeys.accepts(orphan)).toBe(false);
    await t.api().get(`${base}/crashed-create`).expect(404);
    expect((await t.db.pool.query(`SELECT details FROM audit_log WHERE action = 'virtual_key.create_abandoned'`)).rows).toEqual([{ details: expect.objectContaining({ deleted_in_litellm: [sha256(orphan)] }) }]);
    await t.api().post(base).send({ alias: 'crashed-create' }).expect(201);
  });
});
