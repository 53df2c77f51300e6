import { randomUUID } from 'node:crypto';
import request from 'supertest';
import { appendAudit } from '../src/features/audit/audit-store';
import { withTransaction } from '../src/db/pool';
import { startTestApp, type TestApp } from './helpers/app';

/**
 * Issue 8 item 18: every list is paged (?limit= default 100, at most 1,000; opaque ?cursor=; keyset
 * order), and what a render reads from `models` is bounded.
 */

const KEY = 'sk-paging-test-aaaaaaaaaaaa';

interface PageBody<T> {
  items: T[];
  next_cursor: string | null;
}

describe('paging', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp();
  });
  afterAll(async () => {
    await t.close();
  });

  /** Every page of `path` at `limit`, following next_cursor; checks each page's size. */
  async function walk<T>(path: string, limit: number): Promise<T[]> {
    const out: T[] = [];
    let cursor: string | null = null;
    for (let pages = 0; pages < 1000; pages++) {
      const sep = path.includes('?') ? '&' : '?';
      const res = await t.api().get(`${path}${sep}limit=${limit}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`).expect(200);
      const body = res.body as PageBody<T>;
      expect(body.items.length).toBeLessThanOrEqual(limit);
      out.push(...body.items);
      if (body.next_cursor === null) return out;
      expect(body.items).toHaveLength(limit);
      cursor = body.next_cursor;
    }
    throw new Error(`${path} never ended`);
  }

  /** Walking `path` in small pages gives exactly the one-page list: same rows, same order, no gap, no repeat. */
  async function expectWalkable<T>(path: string, id: (item: T) => string, limit: number, atLeast: number): Promise<T[]> {
    const whole = (await t.api().get(`${path}${path.includes('?') ? '&' : '?'}limit=1000`).expect(200)).body as PageBody<T>;
    expect(whole.next_cursor).toBeNull();
    expect(whole.items.length).toBeGreaterThanOrEqual(atLeast);
    const walked = await walk<T>(path, limit);
    const ids = walked.map(id);
    expect(new Set(ids).size).toBe(ids.length);
    expect(ids).toEqual(whole.items.map(id));
    return walked;
  }

  it('platform keys (names whose collation order is not byte order) and their versions', async () => {
    const names = ['a-b', 'a_b', 'ab', 'a-c', 'b', 'b-a', 'z9', 'z-', ...Array.from({ length: 17 }, (_, i) => `key${i}`)];
    for (const [i, n] of names.entries()) await t.api().put(`/api/v1/admin/platform-keys/${n}`).send({ api_key: KEY, env_var: `PAGING${i}_API_KEY` }).expect(200);
    const walked = await expectWalkable<{ name: string }>('/api/v1/admin/platform-keys', (k) => k.name, 4, names.length);
    const { rows } = await t.db.pool.query<{ name: string }>('SELECT name FROM platform_keys ORDER BY name');
    expect(walked.map((k) => k.name)).toEqual(rows.map((r) => r.name));
    for (let i = 0; i < 11; i++) await t.api().put('/api/v1/admin/platform-keys/b').send({ api_key: `${KEY}${i}` }).expect(200);
    const versions = await expectWalkable<{ version: number }>('/api/v1/admin/platform-keys/b/versions', (v) => String(v.version), 5, 12);
    expect(versions.map((v) => v.version)).toEqual(Array.from({ length: 12 }, (_, i) => 12 - i));
  });

  it('providers, and the health list', async () => {
    for (let i = 0; i < 9; i++) await t.api().put(`/api/v1/admin/providers/p${i}`).send({ kind: 'openai' }).expect(201);
    await expectWalkable<{ slug: string }>('/api/v1/admin/providers', (p) => p.slug, 3, 16);
    await expectWalkable<{ slug: string }>('/api/v1/admin/providers/health', (p) => p.slug, 5, 16);
  });

  it('models, filtered, with deployments that share a name and a created_at (the id breaks the tie)', async () => {
    for (let i = 0; i < 12; i++) await t.api().post('/api/v1/admin/models').send({ model_name: `m${i % 3}`, provider: i % 2 ? 'openai' : 'groq', model: `x${i}` }).expect(201);
    await t.db.pool.query(
      `INSERT INTO models (id, model_name, provider, model, created_at)
       SELECT gen_random_uuid(), 'm1', 'openai', 'tie' || i, timestamptz '2025-01-01 00:00:00.123456+00' FROM generate_series(1, 9) AS i`,
    );
    const all = await expectWalkable<{ id: string }>('/api/v1/admin/models', (m) => m.id, 4, 21);
    expect(all).toHaveLength(21);
    const openai = await expectWalkable<{ id: string; provider: string }>('/api/v1/admin/models?provider=openai', (m) => m.id, 2, 15);
    expect(openai.every((m) => m.provider === 'openai')).toBe(true);
    const m1 = await expectWalkable<{ id: string; model_name: string }>('/api/v1/admin/models?model_name=m1&provider=openai', (m) => m.id, 3, 11);
    expect(m1.every((m) => m.model_name === 'm1')).toBe(true);
  });

  it('tokens, audit (cursor, and the older before), BYOK keys, health history and sync revisions', async () => {
    for (let i = 0; i < 7; i++) await t.api().post('/api/v1/admin/tokens').send({ name: `tok${i}`, role: 'viewer' }).expect(201);
    await expectWalkable<{ id: string }>('/api/v1/admin/tokens', (k) => k.id, 3, 7);

    await withTransaction(t.db.pool, async (c) => {
      for (let i = 0; i < 120; i++) await appendAudit(c, { actor: 'test', action: 'test.fill', target: `fill/${i}` });
    });
    const audit = await expectWalkable<{ id: number }>('/api/v1/admin/audit', (a) => String(a.id), 9, 140);
    expect(audit.map((a) => a.id)).toEqual([...audit.map((a) => a.id)].sort((a, b) => b - a));
    const first = await t.api().get('/api/v1/admin/audit?limit=5').expect(200);
    const byBefore = await t.api().get(`/api/v1/admin/audit?limit=5&before=${first.body.next_before}`).expect(200);
    const byCursor = await t.api().get(`/api/v1/admin/audit?limit=5&cursor=${first.body.next_cursor}`).expect(200);
    expect(byBefore.body.items).toEqual(byCursor.body.items);
    expect(byBefore.body.items[0].id).toBe(audit[5]!.id);
    await t.api().get(`/api/v1/admin/audit?before=3&cursor=${first.body.next_cursor}`).expect(400);
    // Without ?limit: 100.
    const deflt = await t.api().get('/api/v1/admin/audit').expect(200);
    expect(deflt.body.items).toHaveLength(100);
    expect(deflt.body.next_cursor).not.toBeNull();

    for (const p of ['openai', 'groq', 'anthropic', 'gemini', 'mistral']) await t.api().post('/api/v1/llm/byok/keys').send({ provider: p, api_key: KEY }).expect(201);
    await expectWalkable<{ provider: string }>('/api/v1/llm/byok/keys', (k) => k.provider, 2, 5);

    await t.db.pool.query(
      `INSERT INTO health_history (subject, name, status, observed_status, reason, checked_at)
       SELECT 'provider', 'openai', 'healthy', 'healthy', 'ok', now() FROM generate_series(1, 8)`,
    );
    await expectWalkable<{ id: number }>('/api/v1/admin/providers/openai/health/history', (h) => String(h.id), 3, 8);

    await t.db.pool.query(
      `INSERT INTO sync_revisions (config_sha256, env_digest, changed_files, trigger, instance_id)
       SELECT repeat('0', 64), 'hmac-sha256:' || repeat('0', 32), '{}', 'test', 'test' FROM generate_series(1, 7)`,
    );
    await expectWalkable<{ revision: number }>('/api/v1/admin/sync/revisions', (r) => String(r.revision), 2, 7);
  });

  it('a cursor is opaque and checked: garbage, or one from another list, is a 400 on query.cursor; limits are 1 to 1000', async () => {
    const modelCursor = (await t.api().get('/api/v1/admin/models?limit=1').expect(200)).body.next_cursor as string;
    const bad = ['garbage!', 'bm90IGpzb24', Buffer.from('[1,2]').toString('base64url'), modelCursor, 'A'.repeat(2000)];
    for (const cursor of bad) {
      const res = await t.api().get(`/api/v1/admin/platform-keys?cursor=${encodeURIComponent(cursor)}`).expect(400);
      expect(res.body.errors).toEqual([{ field: 'query.cursor', rule: 'must be a next_cursor this list gave out' }]);
    }
    await t.api().get(`/api/v1/admin/models?cursor=${Buffer.from(JSON.stringify(['m', 1, 'not-a-uuid'])).toString('base64url')}`).expect(400);
    for (const limit of ['0', '1001', '-1', '1.5', 'ten', '']) {
      const res = await t.api().get(`/api/v1/admin/tokens?limit=${limit}`).expect(400);
      expect(res.body.errors.map((e: { field: string }) => e.field)).toEqual(['query.limit']);
    }
    expect((await t.api().get('/api/v1/admin/tokens?limit=1000').expect(200)).body.next_cursor).toBeNull();
  });

  it('what a render reads is bounded: at most 5,000 deployments and 8 MiB of their text, for any writer', async () => {
    await t.db.pool.query('DELETE FROM models');
    await t.db.pool.query(`INSERT INTO models (id, model_name, provider, model) SELECT gen_random_uuid(), 'bulk', 'openai', 'x' || i FROM generate_series(1, 5000) AS i`);
    const full = await t.api().post('/api/v1/admin/models').send({ model_name: 'one-more', provider: 'openai', model: 'y' }).expect(409);
    expect(full.type).toBe('application/problem+json');
    expect(full.body).toMatchObject({ type: 'https://keyplane.dev/problems/limit-exceeded', status: 409 });
    expect(full.body.detail).toMatch(/at most 5000 model deployments \(limit: models\)/);
    await expect(t.db.pool.query(`INSERT INTO models (id, model_name, provider, model) VALUES ($1, 'sql', 'openai', 'z')`, [randomUUID()])).rejects.toMatchObject({ code: 'KPLIM' });

    await t.db.pool.query('DELETE FROM models');
    const pad = (n: number) => JSON.stringify({ pad: 'x'.repeat(n) });
    await expect(
      t.db.pool.query(`INSERT INTO models (id, model_name, provider, model, model_info) SELECT gen_random_uuid(), 'big', 'openai', 'x' || i, $1::jsonb FROM generate_series(1, 530) AS i`, [pad(16_000)]),
    ).rejects.toMatchObject({ code: 'KPLIM' });
    // Fill up to 10,000 bytes under the limit: a deployment of 16 KB no longer fits, a small one does.
    await t.db.pool.query(`INSERT INTO models (id, model_name, provider, model, model_info) SELECT gen_random_uuid(), 'big', 'openai', 'x' || i, $1::jsonb FROM generate_series(1, 500) AS i`, [pad(16_000)]);
    const used = Number((await t.db.pool.query<{ s: string }>('SELECT sum(stored_bytes) AS s FROM models')).rows[0]!.s);
    const last = 8 * 1024 * 1024 - 10_000 - used;
    await t.db.pool.query(`INSERT INTO models (id, model_name, provider, model, model_info) VALUES ($1, 'big', 'openai', 'last', $2::jsonb)`, [randomUUID(), pad(last - 200)]);
    expect(Number((await t.db.pool.query<{ s: string }>('SELECT sum(stored_bytes) AS s FROM models')).rows[0]!.s)).toBeLessThan(8 * 1024 * 1024 - 10_000);
    const big = await t.api().post('/api/v1/admin/models').send({ model_name: 'big', provider: 'openai', model: 'y', model_info: { a: 'x'.repeat(8000), b: 'x'.repeat(8000) } }).expect(409);
    expect(big.body.detail).toMatch(/at most 8 MiB .* \(limit: models_bytes;/);
    await t.api().post('/api/v1/admin/models').send({ model_name: 'small', provider: 'openai', model: 'y' }).expect(201);
    // A page of the biggest deployments stays a page.
    const page = await request(t.kp.url!).get('/api/v1/admin/models').set('Authorization', `Bearer ${t.adminToken}`).expect(200);
    expect(page.body.items).toHaveLength(100);
    expect(page.text.length).toBeLessThan(2 * 1024 * 1024);
    await t.db.pool.query('DELETE FROM models');
  }, 60_000);
});
