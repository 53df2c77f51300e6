import { randomBytes } from 'node:crypto';
import type { Logger } from '../src/log';
import { LitellmClient } from '../src/litellm/client';
import type { DesiredState } from '../src/sync/desired-state';
import { createTestDatabase, type TestDatabase } from './helpers/db';
import { FakeLitellm } from './helpers/fake-litellm';
import { baseState, capturingLogger, ledger, D_CLAUDE, D_OPENAI, M_CLAUDE, M_OPENAI, MASTER, reloaderFor, request, resetLitellmState } from './helpers/litellm-api';

/**
 * Edits made inside LiteLLM to what keyplane manages are repaired by the next sync, found without
 * reading a secret back: keyplane compares LiteLLM's masked view with its own values masked the
 * same way, and a reconcile sends every masked value again.
 */

let db: TestDatabase;
let fake: FakeLitellm;
let admin: LitellmClient;
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
  admin = new LitellmClient({ url: fake.url, masterKey: MASTER });
  ({ log, logs } = capturingLogger());
  await resetLitellmState(db);
  state = baseState();
});

afterEach(async () => {
  // Whatever was repaired, no masked value went back, and no secret reached a log line.
  expect(fake.maskedEchoes).toBe(0);
  for (const k of state.keys) expect(logs()).not.toContain(k.value);
  await fake.stop();
});

const run = (trigger?: string) => reloaderFor(fake, db, log).reload(request(state, revision++, undefined, trigger));
const writes = () => fake.writes().map((w) => `${w.method} ${w.path}`);
const openaiKey = () => state.keys.find((k) => k.name === 'openai')!.value;

async function synced(): Promise<void> {
  expect((await run()).status).toBe('ok');
  fake.clearRequests();
}

describe('litellm-api repairs edits made inside LiteLLM', () => {
  it('an api_base moved to another host is put back, that field alone', async () => {
    await synced();
    await admin.updateModel(D_OPENAI, { litellm_params: { api_base: 'https://collector.example/v1' } });
    fake.clearRequests();
    expect((await run()).status).toBe('ok');
    expect(writes()).toEqual([`PATCH /model/${D_OPENAI}/update`]);
    expect((fake.writes()[0]!.body as { litellm_params: unknown }).litellm_params).toEqual({ api_base: 'https://api.openai.com/v1' });
    expect(fake.models.get(D_OPENAI)!.litellm_params.api_base).toBe('https://api.openai.com/v1');
    fake.clearRequests();
    await synced();
    expect(fake.writes()).toEqual([]);
  });

  it('an api_base added to a model that has none is removed by recreating the model', async () => {
    await synced();
    await admin.updateModel(D_CLAUDE, { litellm_params: { api_base: 'https://collector.example' } });
    fake.clearRequests();
    expect((await run()).status).toBe('ok');
    expect(writes()).toEqual(['POST /model/delete', 'POST /model/new']);
    expect(fake.models.get(D_CLAUDE)!.litellm_params).toEqual({ model: 'anthropic/claude-3-5-sonnet-20241022', litellm_credential_name: 'keyplane-anthropic' });
    expect(await ledger(db)).toContain(`model:${D_CLAUDE}`);
  });

  it('a model pointed at another credential is pointed back', async () => {
    await synced();
    await admin.createCredential({ credential_name: 'team-openai', credential_values: { api_key: 'sk-team-0123456789abcdef' }, credential_info: {} });
    await admin.updateModel(D_OPENAI, { litellm_params: { litellm_credential_name: 'team-openai' } });
    fake.clearRequests();
    expect((await run()).status).toBe('ok');
    expect(writes()).toEqual([`PATCH /model/${D_OPENAI}/update`]);
    expect(fake.models.get(D_OPENAI)!.litellm_params.litellm_credential_name).toBe('keyplane-openai');
    expect(fake.credentials.has('team-openai')).toBe(true);
  });

  it('a renamed model and an altered marker are repaired', async () => {
    await synced();
    await admin.updateModel(D_OPENAI, { model_name: 'renamed', model_info: { keyplane_id: 'someone-else', team: 'other' } });
    fake.clearRequests();
    expect((await run()).status).toBe('ok');
    expect(writes()).toEqual([`PATCH /model/${D_OPENAI}/update`]);
    expect(fake.models.get(D_OPENAI)).toMatchObject({ model_name: 'gpt-4o-mini', model_info: { keyplane_id: M_OPENAI, team: 'core' } });
  });

  it('a credential\'s key replaced inside LiteLLM is replaced back with keyplane\'s', async () => {
    await synced();
    // Masks differently from keyplane's key (its last two characters are not hex).
    await admin.patchCredential('keyplane-openai', { credential_values: { api_key: `sk-foreign-${randomBytes(8).toString('hex')}ZZ` }, credential_info: {} });
    fake.clearRequests();
    expect((await run()).status).toBe('ok');
    expect(writes()).toEqual(['PATCH /credentials/keyplane-openai']);
    expect((fake.writes()[0]!.body as { credential_values: unknown }).credential_values).toEqual({ api_key: openaiKey() });
    expect(fake.credentials.get('keyplane-openai')!.credential_values).toEqual({ api_key: openaiKey() });
  });

  it('a replaced key that masks like keyplane\'s is caught by the next reconcile, which sends every masked value again', async () => {
    await synced();
    const lookalike = `${openaiKey().slice(0, 2)}-foreign-${randomBytes(8).toString('hex')}${openaiKey().slice(-2)}`;
    await admin.patchCredential('keyplane-openai', { credential_values: { api_key: lookalike }, credential_info: {} });
    fake.clearRequests();
    // LiteLLM shows both as the same masked string: an ordinary sync cannot tell them apart.
    expect((await run()).status).toBe('ok');
    expect(fake.writes()).toEqual([]);

    expect((await run('notify+reconcile')).status).toBe('ok');
    expect(writes().sort()).toEqual(
      ['PATCH /credentials/keyplane-anthropic', 'PATCH /credentials/keyplane-openai', `PATCH /model/${D_CLAUDE}/update`, `PATCH /model/${D_OPENAI}/update`].sort(),
    );
    expect(fake.credentials.get('keyplane-openai')!.credential_values).toEqual({ api_key: openaiKey() });
    // Only what LiteLLM masks is sent again: the key, and each model's credential name.
    for (const w of fake.writes()) {
      const body = w.body as { credential_values?: unknown; litellm_params?: unknown };
      if (w.path.startsWith('/credentials/')) expect(Object.keys(body.credential_values as object)).toEqual(['api_key']);
      else expect(body.litellm_params).toEqual({ litellm_credential_name: w.path.includes(D_OPENAI) ? 'keyplane-openai' : 'keyplane-anthropic' });
    }
    fake.clearRequests();
    await synced();
    expect(fake.writes()).toEqual([]);
  });

  it('a field added to a credential (an api_base) is removed by recreating the credential', async () => {
    await synced();
    await admin.patchCredential('keyplane-anthropic', { credential_values: { api_base: 'https://collector.example' }, credential_info: {} });
    fake.clearRequests();
    expect((await run()).status).toBe('ok');
    expect(writes()).toEqual(['DELETE /credentials/keyplane-anthropic', 'POST /credentials']);
    expect(fake.credentials.get('keyplane-anthropic')!.credential_values).toEqual({ api_key: state.keys.find((k) => k.name === 'anthropic')!.value });
    expect(await ledger(db)).toContain('credential:keyplane-anthropic');
  });

  it('a credential whose marks were removed is still keyplane\'s (the ledger says so) and is marked again', async () => {
    await synced();
    await admin.patchCredential('keyplane-openai', { credential_values: {}, credential_info: { keyplane_managed: false, description: 'mine now' } });
    fake.clearRequests();
    expect((await run()).status).toBe('ok');
    expect(writes()).toEqual(['PATCH /credentials/keyplane-openai']);
    expect(fake.credentials.get('keyplane-openai')!.credential_info).toMatchObject({ keyplane_managed: true, description: 'managed by keyplane' });
  });

  it('an item of keyplane\'s deleted inside LiteLLM is created again, and one no longer wanted leaves the ledger', async () => {
    await synced();
    fake.models.delete(D_CLAUDE);
    expect((await run()).status).toBe('ok');
    expect(writes()).toEqual(['POST /model/new']);
    expect(fake.models.has(D_CLAUDE)).toBe(true);

    fake.models.delete(D_CLAUDE);
    fake.credentials.delete('keyplane-anthropic');
    state.models = state.models.filter((m) => m.id !== M_CLAUDE);
    fake.clearRequests();
    expect((await run()).status).toBe('ok');
    expect(fake.writes()).toEqual([]);
    expect(await ledger(db)).toEqual(['credential:keyplane-openai', `model:${D_OPENAI}`]);
  });
});

describe('litellm-api after an upgrade from a keyplane without the ledger', () => {
  it('adopts, once, what an earlier keyplane created, never a copy; from then on the ledger alone decides', async () => {
    await resetLitellmState(db, { adopted: false });
    const stale = `sk-stale-${randomBytes(12).toString('hex')}`;
    const marks = { custom_llm_provider: 'openai', description: 'managed by keyplane', keyplane_managed: true, keyplane_digests: { api_key: 'hmac-sha256:old' } };
    await admin.createCredential({ credential_name: 'keyplane-openai', credential_values: { api_key: stale }, credential_info: marks });
    // Before pools a DB model's id was its keyplane_id; since, it is derived from the model and its key.
    await admin.createModel({ model_name: 'gpt-4o-mini', litellm_params: { model: 'openai/gpt-4o-mini', litellm_credential_name: 'keyplane-openai' }, model_info: { id: M_OPENAI, keyplane_id: M_OPENAI } });
    await admin.createModel({ model_name: 'claude-old', litellm_params: { model: 'anthropic/claude-3-5-sonnet-20241022' }, model_info: { id: D_CLAUDE, keyplane_id: M_CLAUDE, keyplane_key: 'anthropic' } });
    await admin.createModel({ model_name: 'gpt-4o-mini', litellm_params: { model: 'openai/gpt-4o-mini' }, model_info: { id: 'copy-1', keyplane_id: M_OPENAI } });
    await admin.createModel({ model_name: 'gpt-4o-mini', litellm_params: { model: 'openai/gpt-4o-mini' }, model_info: { id: 'copy-2', keyplane_id: M_OPENAI, keyplane_key: 'openai' } });
    fake.clearRequests();

    const first = await run();
    expect(first.status).toBe('ok');
    expect(first.error).toMatch(/model copy-1 \(gpt-4o-mini\) carries keyplane_id \S+ but keyplane did not create it: left alone; model copy-2/);
    expect(await ledger(db)).toEqual(['credential:keyplane-anthropic', 'credential:keyplane-openai', ...[`model:${D_CLAUDE}`, `model:${D_OPENAI}`].sort()]);
    // The adopted items were brought up to date in place, not created again; the model of the old
    // form is replaced by its per-key successor, created before the old one goes.
    expect(writes()).toEqual([
      'POST /credentials',
      'PATCH /credentials/keyplane-openai',
      `PATCH /model/${D_CLAUDE}/update`,
      'POST /model/new',
      'POST /model/delete',
    ]);
    expect(fake.writes()[3]!.body).toMatchObject({ model_info: { id: D_OPENAI } });
    expect(fake.writes()[4]!.body).toEqual({ id: M_OPENAI });
    expect(fake.models.get(D_CLAUDE)).toMatchObject({ model_name: 'claude-3-5-sonnet', litellm_params: { litellm_credential_name: 'keyplane-anthropic' } });
    expect(fake.credentials.get('keyplane-openai')!.credential_values).toEqual({ api_key: openaiKey() });
    expect(fake.models.get('copy-1')!.litellm_params).toEqual({ model: 'openai/gpt-4o-mini' });
    expect(fake.models.get('copy-2')!.litellm_params).toEqual({ model: 'openai/gpt-4o-mini' });
    const { rows } = await db.pool.query<{ adopted_at: Date | null }>('SELECT adopted_at FROM litellm_api_state');
    expect(rows[0]!.adopted_at).toBeInstanceOf(Date);

    // A marked credential that appears later is not adopted: it is left alone and reported.
    await admin.createCredential({ credential_name: 'keyplane-groq', credential_values: { api_key: 'gsk_planted_0123456789' }, credential_info: { ...marks, custom_llm_provider: 'groq' } });
    fake.clearRequests();
    const later = await run();
    expect(later.status).toBe('ok');
    expect(later.error).toMatch(/credential keyplane-groq carries keyplane's marks but keyplane did not create it: left alone/);
    expect(fake.writes()).toEqual([]);
    expect(await ledger(db)).not.toContain('credential:keyplane-groq');
  });
});
