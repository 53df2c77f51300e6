import { randomUUID } from 'node:crypto';
import pg from 'pg';
import { SYNC_CHANNEL } from '../src/sync/watcher';
import { createTestDatabase, type TestDatabase } from './helpers/db';
import { captureLog, keyService, keyValue, TEST_CTX } from './helpers/sync';

describe('NOTIFY triggers', () => {
  let db: TestDatabase;
  let listener: pg.Client;
  const seen: Array<{ table: string; op: string; id: string }> = [];
  const raw: string[] = [];

  beforeAll(async () => {
    db = await createTestDatabase();
    listener = new pg.Client({ connectionString: db.url });
    await listener.connect();
    listener.on('notification', (n) => {
      raw.push(n.payload ?? '');
      seen.push(JSON.parse(n.payload ?? '{}'));
    });
    await listener.query(`LISTEN ${SYNC_CHANNEL}`);
  });
  afterAll(async () => {
    await listener.end();
    await db.drop();
  });

  /** Runs `change`, then a marker NOTIFY; notifications arrive in commit order, so the marker ends the batch. */
  async function notificationsOf(change: () => Promise<unknown>): Promise<Array<{ table: string; op: string; id: string }>> {
    seen.length = 0;
    raw.length = 0;
    await change();
    const marker = randomUUID();
    await db.pool.query('SELECT pg_notify($1, $2)', [SYNC_CHANNEL, JSON.stringify({ table: 'marker', op: 'x', id: marker })]);
    const deadline = Date.now() + 5000;
    while (!seen.some((n) => n.id === marker)) {
      if (Date.now() > deadline) throw new Error('marker notification never arrived');
      await new Promise((r) => setTimeout(r, 2));
    }
    return seen.filter((n) => n.table !== 'marker');
  }

  it('a key PUT notifies for the key and its new version, naming rows, never the value', async () => {
    const { secrets } = captureLog();
    const keys = keyService(db.pool, secrets);
    const value = keyValue('sk-notify');
    const got = await notificationsOf(() => keys.put('openai', { api_key: value }, TEST_CTX));
    expect(got).toEqual(
      expect.arrayContaining([
        { table: 'platform_keys', op: 'insert', id: 'openai' },
        { table: 'platform_key_versions', op: 'insert', id: 'openai/1' },
      ]),
    );
    expect(raw.join('\n')).not.toContain(value);
    expect(raw.join('\n')).not.toContain('ciphertext');
    const del = await notificationsOf(() => keys.delete('openai', TEST_CTX));
    expect(del).toEqual(expect.arrayContaining([{ table: 'platform_keys', op: 'delete', id: 'openai' }]));
  });

  it('providers notify only when a column the renderer reads changes', async () => {
    expect(await notificationsOf(() => db.pool.query(`UPDATE providers SET updated_at = now() WHERE slug = 'openai'`))).toEqual([]);
    expect(await notificationsOf(() => db.pool.query(`UPDATE providers SET enabled = enabled, kind = kind WHERE slug = 'openai'`))).toEqual([]);
    for (const set of [`enabled = false`, `api_base = 'https://proxy.example/v1'`, `key_name = 'other'`, `kind = 'azure'`]) {
      expect(await notificationsOf(() => db.pool.query(`UPDATE providers SET ${set} WHERE slug = 'openai'`))).toEqual([{ table: 'providers', op: 'update', id: 'openai' }]);
    }
    expect(await notificationsOf(() => db.pool.query(`INSERT INTO providers (slug, kind, key_name) VALUES ('extra', 'openai', 'extra')`))).toEqual([
      { table: 'providers', op: 'insert', id: 'extra' },
    ]);
    expect(await notificationsOf(() => db.pool.query(`DELETE FROM providers WHERE slug = 'extra'`))).toEqual([{ table: 'providers', op: 'delete', id: 'extra' }]);
  });

  it('models and routing notify on insert, update and delete', async () => {
    const id = randomUUID();
    expect(await notificationsOf(() => db.pool.query(`INSERT INTO models (id, model_name, provider, model) VALUES ($1, 'm', 'groq', 'llama')`, [id]))).toEqual([
      { table: 'models', op: 'insert', id },
    ]);
    expect(await notificationsOf(() => db.pool.query(`UPDATE models SET rpm = 5 WHERE id = $1`, [id]))).toEqual([{ table: 'models', op: 'update', id }]);
    expect(await notificationsOf(() => db.pool.query(`DELETE FROM models WHERE id = $1`, [id]))).toEqual([{ table: 'models', op: 'delete', id }]);
    expect(await notificationsOf(() => db.pool.query(`UPDATE routing SET aliases = '{"a":"m"}' WHERE id = 1`))).toEqual([{ table: 'routing', op: 'update', id: '1' }]);
  });

  it('a rolled-back change notifies nothing', async () => {
    const got = await notificationsOf(async () => {
      const c = await db.pool.connect();
      try {
        await c.query('BEGIN');
        await c.query(`UPDATE providers SET enabled = NOT enabled WHERE slug = 'groq'`);
        await c.query('ROLLBACK');
      } finally {
        c.release();
      }
    });
    expect(got).toEqual([]);
  });
});
