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
import { SECRET_TABLES } from '../../src/crypto/secret-tables';
import type { StoredJwe } from '../../src/crypto/keyring';
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
  /**
   * Values keyplane hands out once and never keeps (virtual keys): the scan allows each in at most
   * one response, and in no log line and nowhere in the database.
   */
  shownOnce?: () => string[];
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
  const responses = captureResponses(kp);
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
      // The secret scan: every value stored through this app, looked for in its logs and responses.
      const secrets = await storedSecrets(kp).catch(() => []);
      const once = opts.shownOnce?.() ?? [];
      const stored = once.length ? await databaseText(kp) : '';
      await kp.stop();
      // supertest's requests go through Node's keep-alive global agent; its idle sockets to the
      // stopped server would otherwise hold the test process open for the agent's timeout.
      http.globalAgent.destroy();
      if (!opts.db) await db.drop();
      rmSync(dir, { recursive: true, force: true });
      const leaks = [...findLeaks(secrets, [{ where: 'the log', text: captured }, ...responses]), ...findRepeats(once, captured, responses, stored)];
      if (leaks.length) throw new Error(`secret scan: ${leaks.length} stored secret value(s) leaked: ${leaks.join('; ')}`);
    },
  };
}

/** Bodies of every response this app sends, except the audited decrypted endpoint (which exists to show a key). */
function captureResponses(kp: Keyplane): Array<{ where: string; text: string }> {
  const out: Array<{ where: string; text: string }> = [];
  kp.server!.prependListener('request', (req: http.IncomingMessage, res: http.ServerResponse) => {
    if (/\/decrypted\/*$/.test((req.url ?? '').split('?')[0]!)) return;
    const chunks: Buffer[] = [];
    const keep = (chunk: unknown): void => {
      if (chunk !== undefined && chunk !== null && typeof chunk !== 'function') chunks.push(Buffer.from(chunk as string));
    };
    const write = res.write.bind(res) as (...a: unknown[]) => boolean;
    const end = res.end.bind(res) as (...a: unknown[]) => http.ServerResponse;
    (res as unknown as { write: (...a: unknown[]) => boolean }).write = (...a: unknown[]) => {
      keep(a[0]);
      return write(...a);
    };
    (res as unknown as { end: (...a: unknown[]) => http.ServerResponse }).end = (...a: unknown[]) => {
      keep(a[0]);
      const headers = JSON.stringify(res.getHeaders());
      out.push({ where: `${req.method} ${req.url}`, text: headers + Buffer.concat(chunks).toString('utf8') });
      return end(...a);
    };
  });
  return out;
}

/** Every secret value stored in the database (all versions of every platform key, every BYOK key). */
async function storedSecrets(kp: Keyplane): Promise<string[]> {
  const out: string[] = [];
  for (const t of SECRET_TABLES) {
    if (t.table === 'keyplane_secrets') continue;
    const { rows } = await kp.pool.query<Record<string, unknown> & { jwe: StoredJwe }>(`SELECT ${t.keys.join(', ')}, jwe FROM ${t.table}`);
    for (const row of rows) {
      try {
        out.push(await kp.keyring.decrypt(row.jwe, t.ref(row)));
      } catch {
        // A row a test tampered with on purpose.
      }
    }
  }
  return out.filter((v) => v.length >= 8);
}

/** Every row of every table of keyplane's database, as text. */
async function databaseText(kp: Keyplane): Promise<string> {
  const { rows: tables } = await kp.pool.query<{ t: string }>(`SELECT quote_ident(tablename) AS t FROM pg_tables WHERE schemaname = 'public'`);
  let out = '';
  for (const { t } of tables) for (const r of (await kp.pool.query<{ row: string }>(`SELECT x::text AS row FROM ${t} x`)).rows) out += `${r.row}\n`;
  return out;
}

/** Values shown once: in more than one response, in the log, or stored anywhere. */
export function findRepeats(values: string[], log: string, responses: Array<{ where: string; text: string }>, stored: string): string[] {
  const leaks: string[] = [];
  for (const v of values) {
    const shown = responses.filter((r) => r.text.includes(v)).map((r) => r.where);
    if (shown.length > 1) leaks.push(`the value ending in ${v.slice(-4)} was shown ${shown.length} times (${shown.join(', ')})`);
    if (log.includes(v)) leaks.push(`the log holds the value ending in ${v.slice(-4)}`);
    if (stored.includes(v)) leaks.push(`the database holds the value ending in ${v.slice(-4)}`);
  }
  return leaks;
}

export function findLeaks(secrets: string[], texts: Array<{ where: string; text: string }>): string[] {
  const leaks: string[] = [];
  for (const { where, text } of texts) {
    const hit = secrets.find((v) => text.includes(v));
    if (hit) leaks.push(`${where} holds the value ending in ${hit.slice(-4)}`);
  }
  return leaks;
}
