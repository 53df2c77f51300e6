import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { migrate, MigrationError } from '../src/db/migrator';
import { createEmptyDatabase, type TestDatabase } from './helpers/db';

describe('migrator', () => {
  let db: TestDatabase;
  beforeEach(async () => {
    db = await createEmptyDatabase();
  });
  afterEach(async () => {
    await db.drop();
  });

  it('applies every migration once, in order, and records it', async () => {
    const first = await migrate(db.pool);
    expect(first[0]).toBe('001_init.sql');
    expect(first).toEqual([...first].sort());
    const again = await migrate(db.pool);
    expect(again).toEqual([]);
    const { rows } = await db.pool.query('SELECT name FROM keyplane_migrations ORDER BY id');
    expect(rows.map((r) => r.name)).toEqual(first);
  });

  it('concurrent starts apply each migration exactly once', async () => {
    const results = await Promise.all([migrate(db.pool), migrate(db.pool), migrate(db.pool)]);
    const applied = results.flat();
    expect(applied.filter((n) => n === '001_init.sql')).toHaveLength(1);
    const { rows } = await db.pool.query('SELECT count(*)::int AS n FROM providers');
    expect(rows[0].n).toBe(7);
  });

  it('a failing migration rolls back whole and names itself', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'kp-mig-'));
    writeFileSync(path.join(dir, '001_ok.sql'), 'CREATE TABLE t_ok (id int);');
    writeFileSync(path.join(dir, '002_bad.sql'), 'CREATE TABLE t_bad (id int); SELECT no_such_function();');
    await expect(migrate(db.pool, dir)).rejects.toThrow(MigrationError);
    await expect(migrate(db.pool, dir)).rejects.toThrow(/002_bad\.sql/);
    const { rows } = await db.pool.query(`SELECT to_regclass('t_ok') AS ok, to_regclass('t_bad') AS bad`);
    expect(rows[0]).toEqual({ ok: 't_ok', bad: null });
  });

  it('refuses a migration whose file changed after it was applied', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'kp-mig-'));
    writeFileSync(path.join(dir, '001_a.sql'), 'CREATE TABLE t_a (id int);');
    await migrate(db.pool, dir);
    writeFileSync(path.join(dir, '001_a.sql'), 'CREATE TABLE t_a (id bigint);');
    await expect(migrate(db.pool, dir)).rejects.toThrow(/changed after it was applied/);
  });
});
