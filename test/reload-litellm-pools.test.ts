import { randomBytes } from 'node:crypto';
import type { Logger } from '../src/log';
import { litellmModelId } from '../src/reload/litellm-plan';
import type { DesiredState } from '../src/sync/desired-state';
import { startTestApp, type TestApp } from './helpers/app';
import { createTestDatabase, type TestDatabase } from './helpers/db';
import { FakeLitellm, type FakeModel } from './helpers/fake-litellm';
import {
  capturingLogger, D_CLAUDE, D_OPENAI, ledger, M_OPENAI, M_POOL, MASTER, POOL_BASE, POOL_KEYS, poolState, reloaderFor, request, resetLitellmState, setKey, setKeyState,
} from './helpers/litellm-api';

/**
 * Issue 11, item 1 in litellm-api mode: one LiteLLM credential per pool key in service, and one DB
 * model per (model, key) under the model's model_name, each with its key's credential and weight.
 */

const idOf = (key: string): string => litellmModelId(M_POOL, key);

let db: TestDatabase;
let fake: FakeLitellm;
let log: Logger;
let logs: () => string;
let state: DesiredState;
let revision = 1;

beforeAll(async () => {
  db = await createTestDatabase();
});
afterAll(async () => {
  await db.drop();
});

beforeEach(async () => {
  fake = await FakeLitellm.start({ masterKey: MASTER });
  ({ log, logs } = capturingLogger());
  await resetLitellmState(db);
  state = poolState();
});

afterEach(async () => {
  expect(fake.maskedEchoes).toBe(0);
  for (const k of state.keys) expect(logs()).not.toContain(k.value);
  await fake.stop();
});

const run = async (trigger?: string) => {
  const result = await reloaderFor(fake, db, log).reload(request(state, revision++, undefined, trigger));
  expect(result).toMatchObject({ status: 'ok' });
  return result;
};
const writes = () => fake.writes().map((w) => `${w.method} ${w.path}`);
/** A reconcile sends every value LiteLLM masks again (a PATCH); it must never create or delete. */
const createsOrDeletes = () => writes().filter((w) => w.startsWith('POST') || w.startsWith('DELETE'));
const valueOf = (name: string) => state.keys.find((k) => k.name === name)!.value;
const pooled = (): FakeModel[] => [...fake.models.values()].filter((m) => m.model_name === 'pooled-mini');
/** What LiteLLM holds for the pool: model id -> (credential, weight), and credential -> key value. */
const poolView = () => ({
  models: Object.fromEntries(pooled().map((m) => [m.model_id, [m.litellm_params.litellm_credential_name, m.litellm_params.weight]])),
  credentials: Object.fromEntries([...fake.credentials.values()].filter((c) => c.credential_name.startsWith('keyplane-pool-')).map((c) => [c.credential_name, c.credential_values.api_key])),
});
/** Everything LiteLLM holds, to show what a change left alone. */
const snapshot = (exceptIds: string[] = [], exceptCredentials: string[] = []) =>
  JSON.stringify({
    models: [...fake.models.entries()].filter(([id]) => !exceptIds.includes(id)),
    credentials: [...fake.credentials.entries()].filter(([name]) => !exceptCredentials.includes(name)),
  });
async function synced(): Promise<void> {
  await run();
  fake.clearRequests();
}

describe('litellm-api with key pools', () => {
  it('a pool of three keys is three credentials and three DB models under one model_name, with their weights', async () => {
    await run();
    expect(poolView()).toEqual({
      models: {
        [idOf('pool-a')]: ['keyplane-pool-a', 3],
        [idOf('pool-b')]: ['keyplane-pool-b', 1],
        [idOf('pool-c')]: ['keyplane-pool-c', 1],
      },
      credentials: { 'keyplane-pool-a': valueOf('pool-a'), 'keyplane-pool-b': valueOf('pool-b'), 'keyplane-pool-c': valueOf('pool-c') },
    });
    const a = fake.models.get(idOf('pool-a'))!;
    expect(a.litellm_params).toEqual({ model: 'openai/gpt-4o-mini', api_base: POOL_BASE, litellm_credential_name: 'keyplane-pool-a', weight: 3 });
    expect(a.model_info).toMatchObject({ id: idOf('pool-a'), keyplane_id: M_POOL, keyplane_key: 'pool-a' });
    // A provider with one key still has no weight.
    expect(fake.models.get(D_OPENAI)!.litellm_params).not.toHaveProperty('weight');
    expect(await ledger(db)).toEqual(expect.arrayContaining([...POOL_KEYS.map((k) => `credential:keyplane-${k}`), ...POOL_KEYS.map((k) => `model:${idOf(k)}`)]));
    // Every credential is written before a model references it.
    const order = writes();
    expect(order.lastIndexOf('POST /credentials')).toBeLessThan(order.indexOf('POST /model/new'));

    fake.clearRequests();
    await run('reconcile');
    expect(createsOrDeletes()).toEqual([]);
    fake.clearRequests();
    await run();
    expect(fake.writes()).toEqual([]);
  });

  it('a disabled key takes its DB model and then its credential, and nothing else is written', async () => {
    await synced();
    const before = snapshot([idOf('pool-b')], ['keyplane-pool-b']);
    setKeyState(state, 'pool-b', 'disabled');
    await run();
    expect(fake.writes().map((w) => [w.method, w.path, w.body])).toEqual([
      ['POST', '/model/delete', { id: idOf('pool-b') }],
      ['DELETE', '/credentials/keyplane-pool-b', undefined],
    ]);
    expect(snapshot()).toBe(before);
    expect(Object.keys(poolView().models).sort()).toEqual([idOf('pool-a'), idOf('pool-c')].sort());
    expect(await ledger(db)).not.toEqual(expect.arrayContaining([`model:${idOf('pool-b')}`]));
    expect(await ledger(db)).not.toContain('credential:keyplane-pool-b');
    // Cooling and retiring keys are still in service.
    setKeyState(state, 'pool-a', 'cooling');
    setKeyState(state, 'pool-c', 'retiring');
    fake.clearRequests();
    await run();
    expect(fake.writes()).toEqual([]);
  });

  it('with every key of the pool out its DB models and credentials go, the other providers\' stay; enabling brings them back', async () => {
    await synced();
    const others = JSON.stringify([fake.models.get(D_OPENAI), fake.models.get(D_CLAUDE), fake.credentials.get('keyplane-openai'), fake.credentials.get('keyplane-anthropic')]);
    for (const k of POOL_KEYS) setKeyState(state, k, 'disabled');
    await run();
    expect(pooled()).toEqual([]);
    expect(poolView().credentials).toEqual({});
    expect(writes().sort()).toEqual([...Array(3).fill('POST /model/delete'), ...POOL_KEYS.map((k) => `DELETE /credentials/keyplane-${k}`)].sort());
    expect(JSON.stringify([fake.models.get(D_OPENAI), fake.models.get(D_CLAUDE), fake.credentials.get('keyplane-openai'), fake.credentials.get('keyplane-anthropic')])).toBe(others);

    setKeyState(state, 'pool-c', 'active');
    fake.clearRequests();
    await run();
    expect(writes()).toEqual(['POST /credentials', 'POST /model/new']);
    // The pool still has three keys: the one in service keeps its weight.
    expect(poolView()).toEqual({ models: { [idOf('pool-c')]: ['keyplane-pool-c', 1] }, credentials: { 'keyplane-pool-c': valueOf('pool-c') } });

    setKeyState(state, 'pool-a', 'active');
    setKeyState(state, 'pool-b', 'active');
    fake.clearRequests();
    await run();
    expect(writes()).toEqual(['POST /credentials', 'POST /credentials', 'POST /model/new', 'POST /model/new']);
    expect(Object.values(poolView().models)).toEqual(expect.arrayContaining([['keyplane-pool-a', 3], ['keyplane-pool-b', 1], ['keyplane-pool-c', 1]]));
    expect(JSON.stringify([fake.models.get(D_OPENAI), fake.models.get(D_CLAUDE), fake.credentials.get('keyplane-openai'), fake.credentials.get('keyplane-anthropic')])).toBe(others);
  });

  it('a weight change is one PATCH of that key\'s DB model', async () => {
    await synced();
    const before = snapshot([idOf('pool-a')]);
    state.providers.find((p) => p.slug === 'pooled')!.keys![0]!.weight = 5;
    await run();
    expect(writes()).toEqual([`PATCH /model/${idOf('pool-a')}/update`]);
    expect((fake.writes()[0]!.body as { litellm_params: unknown }).litellm_params).toEqual({ weight: 5 });
    expect(fake.models.get(idOf('pool-a'))!.litellm_params.weight).toBe(5);
    expect(snapshot([idOf('pool-a')])).toBe(before);
    fake.clearRequests();
    await run();
    expect(fake.writes()).toEqual([]);
  });

  it('a key given a new value changes only its credential', async () => {
    await synced();
    const before = snapshot([], ['keyplane-pool-b']);
    const rotated = `sk-pool-b-rotated-${randomBytes(16).toString('hex')}`;
    setKey(state, 'pool-b', rotated);
    await run();
    expect(fake.writes().map((w) => [w.method, w.path])).toEqual([['PATCH', '/credentials/keyplane-pool-b']]);
    expect((fake.writes()[0]!.body as { credential_values: unknown }).credential_values).toEqual({ api_key: rotated });
    expect(fake.credentials.get('keyplane-pool-b')!.credential_values).toEqual({ api_key: rotated });
    expect(snapshot([], ['keyplane-pool-b'])).toBe(before);
  });

  it('a pool that grows from one key keeps that key\'s DB model, and shrinking back leaves it alone', async () => {
    // A rotation adds a key to a pool of one and later removes the old one (or the other way round).
    const pool = state.providers.find((p) => p.slug === 'pooled')!;
    const three = pool.keys!;
    pool.keys = [{ name: 'pool-a', weight: 3 }];
    await run();
    expect(poolView().models).toEqual({ [idOf('pool-a')]: ['keyplane-pool-a', undefined] });

    pool.keys = three;
    fake.clearRequests();
    await run();
    expect(writes()).toEqual(['POST /credentials', 'POST /credentials', `PATCH /model/${idOf('pool-a')}/update`, 'POST /model/new', 'POST /model/new']);
    expect(poolView().models).toEqual({ [idOf('pool-a')]: ['keyplane-pool-a', 3], [idOf('pool-b')]: ['keyplane-pool-b', 1], [idOf('pool-c')]: ['keyplane-pool-c', 1] });

    // Down to pool-c alone: the others go; pool-c's model is not recreated (a PATCH cannot remove its
    // weight, and a delete then create could leave LiteLLM without it for a poll).
    pool.keys = [{ name: 'pool-c', weight: 1 }];
    const c = JSON.stringify(fake.models.get(idOf('pool-c')));
    fake.clearRequests();
    await run();
    expect(fake.writes().map((w) => [w.method, w.path, w.body])).toEqual([
      ['POST', '/model/delete', { id: idOf('pool-a') }],
      ['POST', '/model/delete', { id: idOf('pool-b') }],
      ['DELETE', '/credentials/keyplane-pool-a', undefined],
      ['DELETE', '/credentials/keyplane-pool-b', undefined],
    ]);
    expect(JSON.stringify(fake.models.get(idOf('pool-c')))).toBe(c);
    fake.clearRequests();
    await run('reconcile');
    expect(createsOrDeletes()).toEqual([]);
    // Its weight then follows the key's own.
    pool.keys = [{ name: 'pool-c', weight: 7 }];
    fake.clearRequests();
    await run();
    expect(fake.writes().map((w) => [w.path, (w.body as { litellm_params?: unknown }).litellm_params])).toEqual([[`/model/${idOf('pool-c')}/update`, { weight: 7 }]]);
  });

  it('beside another deployment of its model_name, a weight no longer wanted is removed, as in the rendered file', async () => {
    // LiteLLM's simple-shuffle counts a missing weight as 0: a stale one would take all the traffic.
    state.models.find((m) => m.id === M_OPENAI)!.modelName = 'pooled-mini';
    await synced();
    state.providers.find((p) => p.slug === 'pooled')!.keys = [{ name: 'pool-c', weight: 1 }];
    await run();
    expect(writes()).toEqual([
      'POST /model/delete',
      'POST /model/new',
      'POST /model/delete',
      'POST /model/delete',
      'DELETE /credentials/keyplane-pool-a',
      'DELETE /credentials/keyplane-pool-b',
    ]);
    expect(fake.writes()[0]!.body).toEqual({ id: idOf('pool-c') });
    expect(fake.models.get(idOf('pool-c'))!.litellm_params).not.toHaveProperty('weight');
    expect(pooled().map((m) => m.litellm_params.weight)).toEqual([undefined, undefined]);
  });

  it('an install from before pools: each DB model (id = keyplane\'s model id) is replaced by its per-key ones, created before it goes', async () => {
    const pool = state.providers.find((p) => p.slug === 'pooled')!;
    const three = pool.keys!;
    pool.keys = [{ name: 'pool-a', weight: 1 }];
    await run();
    // What an earlier keyplane left: the same model under keyplane's own id, in the ledger.
    const legacy = fake.models.get(idOf('pool-a'))!;
    fake.models.delete(idOf('pool-a'));
    fake.models.set(M_POOL, { ...legacy, model_id: M_POOL, model_info: { ...legacy.model_info, id: M_POOL, keyplane_id: M_POOL } });
    delete fake.models.get(M_POOL)!.model_info.keyplane_key;
    await db.pool.query("UPDATE litellm_owned SET name = $1 WHERE kind = 'model' AND name = $2", [M_POOL, idOf('pool-a')]);
    pool.keys = three;
    fake.clearRequests();
    await run();
    // The model a write creates or deletes.
    const idIn = (body: unknown) => (body as { model_info?: { id?: string }; id?: string } | undefined)?.model_info?.id ?? (body as { id?: string } | undefined)?.id;
    expect(fake.writes().map((w) => [w.method, w.path, idIn(w.body)])).toEqual([
      ['POST', '/credentials', undefined],
      ['POST', '/credentials', undefined],
      ['POST', '/model/new', idOf('pool-a')],
      ['POST', '/model/new', idOf('pool-b')],
      ['POST', '/model/new', idOf('pool-c')],
      ['POST', '/model/delete', M_POOL],
    ]);
    expect(Object.keys(poolView().models).sort()).toEqual(POOL_KEYS.map(idOf).sort());
    expect(await ledger(db)).not.toContain(`model:${M_POOL}`);
  });

  it('a reload cut short at any write is completed by the next one, as a clean run would leave it, without a duplicate', async () => {
    const base = structuredClone(state);
    // A key out, a weight changed and a key given a new value, at once.
    const changed = structuredClone(base);
    setKeyState(changed, 'pool-b', 'disabled');
    changed.providers.find((p) => p.slug === 'pooled')!.keys![2]!.weight = 4;
    setKey(changed, 'pool-a', `sk-pool-a-next-${randomBytes(16).toString('hex')}`);
    const everything = (f: FakeLitellm) =>
      JSON.stringify({ models: [...f.models.entries()].sort(([a], [b]) => (a < b ? -1 : 1)), credentials: [...f.credentials.entries()].sort(([a], [b]) => (a < b ? -1 : 1)) });
    /** Runs `before` (if any), then `target`, the second cut after `cut` writes (0: not cut); returns how many writes `target` took. */
    const apply = async (before: DesiredState | undefined, target: DesiredState, cut: number): Promise<number> => {
      await fake.stop();
      fake = await FakeLitellm.start({ masterKey: MASTER });
      await resetLitellmState(db);
      if (before) {
        state = structuredClone(before);
        await run();
      }
      state = structuredClone(target);
      fake.clearRequests();
      if (cut === 0) {
        await run();
        return fake.writes().length;
      }
      fake.cutAfterWrites(cut);
      const cutShort = await reloaderFor(fake, db, log).reload(request(state, revision++));
      expect(cutShort.status).toBe('failed');
      expect(cutShort.error).toMatch(/cannot reach LiteLLM/);
      // The cut write was applied, its answer lost; nothing after it was sent.
      expect(fake.writes()).toHaveLength(cut);
      fake.heal();
      // The next reload (of a keyplane started again) finishes the job.
      await run(cut % 2 ? 'reconcile' : undefined);
      return fake.writes().length;
    };

    for (const [before, target] of [[undefined, base], [base, changed]] as const) {
      const writesNeeded = await apply(before, target, 0);
      const clean = { litellm: everything(fake), ledger: await ledger(db) };
      expect(writesNeeded).toBeGreaterThanOrEqual(before ? 4 : 10);
      for (let cut = 1; cut <= writesNeeded; cut++) {
        await apply(before, target, cut);
        expect(everything(fake)).toBe(clean.litellm);
        expect(await ledger(db)).toEqual(clean.ledger);
        fake.clearRequests();
        await run('reconcile');
        expect(createsOrDeletes()).toEqual([]);
        fake.clearRequests();
        await run();
        expect(fake.writes()).toEqual([]);
      }
    }
  });
});

describe('KEYPLANE_RELOAD=litellm-api: a running keyplane keeps a pool in LiteLLM\'s database', () => {
  let t: TestApp;
  let live: FakeLitellm;
  const KEYS = { 'live-a': `sk-live-a-${randomBytes(16).toString('hex')}`, 'live-b': `sk-live-b-${randomBytes(16).toString('hex')}`, 'live-c': `sk-live-c-${randomBytes(16).toString('hex')}` };

  beforeAll(async () => {
    live = await FakeLitellm.start({ masterKey: MASTER });
    t = await startTestApp({ env: { KEYPLANE_RELOAD: 'litellm-api', KEYPLANE_LITELLM_URL: live.url, KEYPLANE_LITELLM_MASTER_KEY: MASTER } });
  });
  afterAll(async () => {
    await t.close();
    await live.stop();
  });

  const reloaded = (check: () => boolean) => t.kp.events.waitFor('reload:done', () => check(), 15_000);
  const view = () => [...live.models.values()].map((m) => [m.litellm_params.litellm_credential_name, m.litellm_params.weight]).sort();

  it('the pool\'s keys become DB models; a key disabled through the API leaves LiteLLM, and comes back when enabled', async () => {
    for (const [name, value] of Object.entries(KEYS)) await t.api().put(`/api/v1/admin/platform-keys/${name}`).send({ api_key: value }).expect(200);
    await t.api().put('/api/v1/admin/providers/live').send({ kind: 'openai', api_base: 'https://api.live.example/v1', keys: [{ name: 'live-a', weight: 2 }, { name: 'live-b' }, { name: 'live-c' }] }).expect(201);
    const three = reloaded(() => live.models.size === 3);
    const created = await t.api().post('/api/v1/admin/models').send({ model_name: 'live-mini', provider: 'live', model: 'gpt-4o-mini' }).expect(201);
    await three;
    const id: string = created.body.id;
    expect(view()).toEqual([['keyplane-live-a', 2], ['keyplane-live-b', 1], ['keyplane-live-c', 1]]);
    expect([...live.models.keys()].sort()).toEqual(['live-a', 'live-b', 'live-c'].map((k) => litellmModelId(id, k)).sort());
    expect(live.credentials.get('keyplane-live-b')!.credential_values).toEqual({ api_key: KEYS['live-b'] });

    await t.kp.reloads!.whenIdle();
    live.clearRequests();
    const out = reloaded(() => !live.credentials.has('keyplane-live-b'));
    await t.api().post('/api/v1/admin/platform-keys/live-b/disable').send({ reason: 'leaked' }).expect(200);
    await out;
    expect(view()).toEqual([['keyplane-live-a', 2], ['keyplane-live-c', 1]]);
    expect(live.writes().map((w) => `${w.method} ${w.path}`)).toEqual([`POST /model/delete`, 'DELETE /credentials/keyplane-live-b']);

    const back = reloaded(() => live.models.size === 3);
    await t.api().post('/api/v1/admin/platform-keys/live-b/enable').send({}).expect(200);
    await back;
    expect(view()).toEqual([['keyplane-live-a', 2], ['keyplane-live-b', 1], ['keyplane-live-c', 1]]);
    for (const value of Object.values(KEYS)) expect(t.logs()).not.toContain(value);
  });
});
