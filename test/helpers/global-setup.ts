import { mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { startEmbeddedPostgres } from '../../src/db/embedded';
import { createPool } from '../../src/db/pool';
import { migrate } from '../../src/db/migrator';
import { createLogger, SecretRegistry } from '../../src/log';
import { TEMPLATE_DB, withDatabase } from './db';

/**
 * One Postgres for the whole run: KEYPLANE_TEST_DATABASE_URL if given, else an embedded cluster in
 * a temp dir. Migrations run once into a template database; each test file clones it.
 */
export default async function globalSetup(): Promise<void> {
  const log = createLogger({ secrets: new SecretRegistry(), silent: true });
  let adminUrl = process.env.KEYPLANE_TEST_DATABASE_URL;
  let stop: (() => Promise<void>) | undefined;
  let dataDir: string | undefined;
  if (!adminUrl) {
    dataDir = mkdtempSync(path.join(os.tmpdir(), 'keyplane-test-pg-'));
    const db = await startEmbeddedPostgres(dataDir, log, { database: 'postgres' });
    adminUrl = db.url;
    stop = db.stop;
  }
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  await admin.query(`DROP DATABASE IF EXISTS ${TEMPLATE_DB}`);
  await admin.query(`CREATE DATABASE ${TEMPLATE_DB}`);
  await admin.end();
  const templateUrl = withDatabase(adminUrl, TEMPLATE_DB);
  const pool = createPool(templateUrl, { max: 1 });
  await migrate(pool);
  await pool.end();
  process.env.KEYPLANE_TEST_ADMIN_URL = adminUrl;
  (globalThis as Record<string, unknown>).__KEYPLANE_PG__ = { stop, dataDir };
}

