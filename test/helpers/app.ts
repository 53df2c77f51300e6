import { mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { PassThrough } from 'node:stream';
import request from 'supertest';
import { loadSettings, type Settings } from '../../src/config';
import { Keyring } from '../../src/crypto/keyring';
import { createKeyplane, type Keyplane } from '../../src/main';
import { createTestDatabase, type TestDatabase } from './db';

export interface TestApp {
  kp: Keyplane;
  db: TestDatabase;
  settings: Settings;
  adminToken: string;
  masterKey: string;
  dir: string;
  /** Every log line written so far (JSON), for checks that no secret leaks. */
  logs: () => string;
  /** supertest bound to the running server, with the bootstrap admin token. */
  api: () => request.Agent;
  close(): Promise<void>;
}

export interface TestAppOptions {
  env?: Record<string, string>;
  /** Reuse a database instead of cloning a new one (two instances on one database). */
  db?: TestDatabase;
  masterKey?: string;
}

/** The whole keyplane against its own cloned database, on 127.0.0.1 with a free port, files in a temp dir. */
export async function startTestApp(opts: TestAppOptions = {}): Promise<TestApp> {
  const db = opts.db ?? (await createTestDatabase());
  const dir = mkdtempSync(path.join(os.tmpdir(), 'keyplane-app-'));
  const adminToken = 'adm_' + randomBytes(24).toString('base64url');
  const masterKey = opts.masterKey ?? Keyring.generateSpec('test');
  const settings = loadSettings({
    KEYPLANE_DATABASE_URL: db.url,
    KEYPLANE_DATA_DIR: dir,
    KEYPLANE_LISTEN: '127.0.0.1:0',
    KEYPLANE_MASTER_KEY: masterKey,
    KEYPLANE_ADMIN_TOKEN: adminToken,
    KEYPLANE_LOG_LEVEL: 'debug',
    // Tests probe only their own fakes on 127.0.0.1, when they ask to; never the real providers.
    KEYPLANE_HEALTH_SCHEDULE: 'off',
    ...opts.env,
  });
  const stream = new PassThrough();
  let captured = '';
  stream.on('data', (c: Buffer) => (captured += c.toString('utf8')));
  const kp = await createKeyplane(settings, { logStream: stream });
  const api = (): request.Agent => request.agent(kp.url!).set('Authorization', `Bearer ${adminToken}`);
  return {
    kp,
    db,
    settings,
    adminToken,
    masterKey,
    dir,
    logs: () => captured,
    api,
    async close() {
      await kp.stop();
      // supertest's requests go through Node's keep-alive global agent; its idle sockets to the
      // stopped server would otherwise hold the test process open for the agent's timeout.
      http.globalAgent.destroy();
      if (!opts.db) await db.drop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
