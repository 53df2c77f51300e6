import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { createPool, type Pool } from '../../src/db/pool';

/** The migrated database every test database is cloned from (made by the global setup). */
export const TEMPLATE_DB = 'keyplane_template';

export function adminUrl(): string {
  const url = process.env.KEYPLANE_TEST_ADMIN_URL;
  if (!url) throw new Error('KEYPLANE_TEST_ADMIN_URL is not set: run the tests through jest (its global setup starts Postgres)');
  return url;
}

export function withDatabase(url: string, db: string): string {
  const u = new URL(url);
  u.pathname = `/${db}`;
  return u.toString();
}

export interface TestDatabase {
  name: string;
  url: string;
  pool: Pool;
  drop(): Promise<void>;
}

async function admin<T>(fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const c = new pg.Client({ connectionString: adminUrl() });
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

/** A fresh database cloned from the migrated template, for one test file. */
export function createTestDatabase(): Promise<TestDatabase> {
  return createDatabase('kp_test', `TEMPLATE ${TEMPLATE_DB}`);
}

/** An empty database (not migrated), for migrator tests. */
export function createEmptyDatabase(): Promise<TestDatabase> {
  return createDatabase('kp_empty', '');
}

async function createDatabase(prefix: string, options: string): Promise<TestDatabase> {
  const name = `${prefix}_${randomBytes(6).toString('hex')}`;
  await admin((c) => c.query(`CREATE DATABASE ${name} ${options}`));
  const url = withDatabase(adminUrl(), name);
  const pool = createPool(url, { max: 10 });
  return {
    name,
    url,
    pool,
    async drop() {
      await pool.end().catch(() => undefined);
      await admin((c) => c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`));
    },
  };
}

export async function terminateBackends(db: string, applicationName?: string): Promise<number> {
  return admin(async (c) => {
    const r = await c.query(
      `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid() ${applicationName ? 'AND application_name = $2' : ''}`,
      applicationName ? [db, applicationName] : [db],
    );
    return r.rowCount ?? 0;
  });
}
