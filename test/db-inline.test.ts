import { CommitOutcomeUnknown, inline, withBatchedTransaction } from '../src/db/pool';
import { createTestDatabase, type TestDatabase } from './helpers/db';

describe('statements with their parameters written in', () => {
  let db: TestDatabase;
  beforeAll(async () => {
    db = await createTestDatabase();
  });
  afterAll(async () => {
    await db.drop();
  });

  const tricky = ["plain", "it's", 'back\\slash', 'quote"d', 'new\nline', '$1 and $2', 'ünïcödé', ''];

  it('reads back exactly what the parameterised statement reads, for every kind of value', async () => {
    const values = [tricky[1], 42, -1.5, true, null, new Date('2026-01-02T03:04:05.678Z'), { a: "x'y", b: tricky }];
    const text = 'SELECT $1::text AS s, $2::int AS i, $3::float8 AS f, $4::bool AS b, $5::text AS n, $6::timestamptz AS d, $7::jsonb AS j';
    const c = await db.pool.connect();
    try {
      const viaParams = (await c.query({ text, values })).rows[0];
      const viaInline = (await c.query(inline(c, { text, values }))).rows[0];
      expect(viaInline).toEqual(viaParams);
      expect(viaInline.j.b).toEqual(tricky);
      for (const s of tricky) expect((await c.query(inline(c, { text: 'SELECT $1::text AS s', values: [s] }))).rows[0].s).toBe(s);
    } finally {
      c.release();
    }
  });

  it('a batched transaction rolls back whole when a statement in the commit batch fails', async () => {
    await db.pool.query('CREATE TABLE t_batch (id int PRIMARY KEY)');
    await expect(
      withBatchedTransaction(db.pool, { text: 'INSERT INTO t_batch VALUES ($1) RETURNING id', values: [1] }, async (_c, first, commit) => {
        expect(first!.rows).toEqual([{ id: 1 }]);
        await commit({ text: 'INSERT INTO t_batch VALUES ($1)', values: [2] }, { text: 'INSERT INTO t_batch VALUES ($1)', values: [2] });
      }),
    ).rejects.toThrow(/duplicate key/);
    expect((await db.pool.query('SELECT count(*)::int AS n FROM t_batch')).rows[0].n).toBe(0);
    const ids = await withBatchedTransaction(db.pool, { text: 'INSERT INTO t_batch VALUES ($1) RETURNING id', values: [1] }, async (_c, _first, commit) => {
      const [r] = await commit({ text: 'INSERT INTO t_batch VALUES ($1), ($2) RETURNING id', values: [2, 3] });
      return r!.rows.map((x) => x.id);
    });
    expect(ids).toEqual([2, 3]);
    expect((await db.pool.query('SELECT count(*)::int AS n FROM t_batch')).rows[0].n).toBe(3);
  });

  it('a connection lost while committing is reported as an unknown outcome and never run again', async () => {
    let runs = 0;
    const attempt = withBatchedTransaction(db.pool, { text: 'INSERT INTO t_batch VALUES ($1) RETURNING id', values: [77] }, async (_c, _first, commit) => {
      runs++;
      // The server session ends inside the commit batch: did COMMIT happen? The caller cannot know.
      await commit({ text: 'SELECT pg_terminate_backend(pg_backend_pid())', values: [] });
    });
    await expect(attempt).rejects.toBeInstanceOf(CommitOutcomeUnknown);
    expect(runs).toBe(1);
  });
});
