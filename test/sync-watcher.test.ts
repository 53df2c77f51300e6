import pg from 'pg';
import { SafeEmitter } from '../src/events';
import { backoffDelay } from '../src/sync/backoff';
import type { SyncEvents } from '../src/sync/sync-events';
import { SYNC_CHANNEL, Watcher, type NudgeReason } from '../src/sync/watcher';
import { adminUrl, createTestDatabase, terminateBackends, type TestDatabase } from './helpers/db';
import { captureLog } from './helpers/sync';
import { until } from './helpers/wait';

describe('jittered exponential backoff', () => {
  it('doubles per attempt up to the cap, with the jitter between half and the whole of it', () => {
    const b = { baseMs: 100, maxMs: 2000 };
    expect(backoffDelay(0, b, () => 0)).toBe(50);
    expect(backoffDelay(0, b, () => 1)).toBe(100);
    expect(backoffDelay(3, b, () => 0)).toBe(400);
    expect(backoffDelay(3, b, () => 1)).toBe(800);
    expect(backoffDelay(10, b, () => 1)).toBe(2000);
    expect(backoffDelay(10, b, () => 0)).toBe(1000);
    const spread = new Set(Array.from({ length: 50 }, () => backoffDelay(2, b)));
    expect(spread.size).toBeGreaterThan(40);
    for (const d of spread) {
      expect(d).toBeGreaterThanOrEqual(200);
      expect(d).toBeLessThanOrEqual(400);
    }
  });
});

describe('watcher', () => {
  let db: TestDatabase;
  let admin: pg.Client;
  const logs = captureLog();

  beforeAll(async () => {
    db = await createTestDatabase();
    admin = new pg.Client({ connectionString: adminUrl() });
    await admin.connect();
  });
  afterAll(async () => {
    await admin.query(`ALTER DATABASE ${db.name} ALLOW_CONNECTIONS true`);
    await admin.end();
    await db.drop();
  });

  function watcher(appName: string, nudges: NudgeReason[], events = new SafeEmitter<SyncEvents>()): { w: Watcher; events: SafeEmitter<SyncEvents> } {
    const w = new Watcher({
      connectionString: db.url,
      applicationName: appName,
      log: logs.log,
      events,
      onNudge: (r) => nudges.push(r),
      backoff: { baseMs: 20, maxMs: 200 },
      reconnectWindowMs: 100,
    });
    return { w, events };
  }

  it('a payload that is not JSON still nudges; the notification event names only table, op and id', async () => {
    const nudges: NudgeReason[] = [];
    const { w, events } = watcher('kp-watch-payload', nudges);
    await w.start();
    try {
      const bad = events.waitFor('watcher:notification');
      await db.pool.query('SELECT pg_notify($1, $2)', [SYNC_CHANNEL, 'not json {']);
      expect(await bad).toEqual({ table: '?', op: '?', id: '?' });
      const good = events.waitFor('watcher:notification', (n) => n.table === 'models');
      await db.pool.query('SELECT pg_notify($1, $2)', [SYNC_CHANNEL, JSON.stringify({ table: 'models', op: 'update', id: 'x', extra: 'ignored' })]);
      expect(await good).toEqual({ table: 'models', op: 'update', id: 'x' });
      expect(nudges).toEqual(['notify', 'notify']);
    } finally {
      await w.stop();
    }
  });

  it('an outage longer than one reconnect window: retries on its own until the database takes connections, then resyncs', async () => {
    const nudges: NudgeReason[] = [];
    const { w, events } = watcher('kp-watch-outage', nudges);
    await w.start();
    const from = logs.text().length;
    const logged = (message: string) =>
      logs
        .text()
        .slice(from)
        .split('\n')
        .filter((l) => l && (JSON.parse(l) as { message: string }).message === message).length;
    try {
      // Waits on what the watcher does, not on how many tries fit in a time window (that depends on the machine's load).
      const lost = events.waitFor('watcher:disconnected');
      await admin.query(`ALTER DATABASE ${db.name} ALLOW_CONNECTIONS false`);
      expect(await terminateBackends(db.name, 'kp-watch-outage')).toBe(1);
      expect(await lost).toEqual({ attempt: 1 });
      await until('pg-listen gave up on its reconnect window', () => logged('LISTEN connection gave up reconnecting; starting a fresh one') >= 1);
      // The outage outlasts the window: the watcher's own fresh connections fail, and it keeps trying.
      await until('the watcher retried twice on its own', () => logged('LISTEN connection failed; retrying') >= 2);
      expect(nudges).toEqual([]);
      const back = events.waitFor('watcher:connected', (e) => e.reconnect);
      await admin.query(`ALTER DATABASE ${db.name} ALLOW_CONNECTIONS true`);
      await back;
      expect(nudges).toEqual(['reconnect']);
      const notified = events.waitFor('watcher:notification', (n) => n.table === 'after');
      await db.pool.query('SELECT pg_notify($1, $2)', [SYNC_CHANNEL, JSON.stringify({ table: 'after', op: 'x', id: '1' })]);
      await notified;
      expect(nudges).toEqual(['reconnect', 'notify']);
    } finally {
      await admin.query(`ALTER DATABASE ${db.name} ALLOW_CONNECTIONS true`);
      await w.stop();
    }
  });

  it('a watcher whose first connection fails rejects start (start-up stops)', async () => {
    const w = new Watcher({
      connectionString: db.url.replace(/\/[^/]+$/, '/no_such_database'),
      applicationName: 'kp-watch-none',
      log: logs.log,
      events: new SafeEmitter<SyncEvents>(),
      onNudge: () => undefined,
    });
    await expect(w.start()).rejects.toThrow(/no_such_database/);
    await w.stop();
  });
});
