import { mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { randomBytes } from 'node:crypto';
import request from 'supertest';
import { createServer, type Server, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';
import { loadSettings } from '../src/config';
import { Keyring } from '../src/crypto/keyring';
import { createPool, isUnavailable } from '../src/db/pool';
import { TokensStore } from '../src/features/tokens/tokens-store';
import { createApp } from '../src/http/app';
import { Authenticator } from '../src/http/auth';
import { RouteTable } from '../src/http/route-table';
import { createLogger, SecretRegistry } from '../src/log';
import { createMetrics } from '../src/metrics';
import { createKeyplane, type Keyplane } from '../src/main';
import { spawnEmbeddedPostgres, type EmbeddedCluster } from './helpers/embedded-pg';
import { envLine, waitForFile } from './helpers/sync';

/**
 * Postgres stops under a running keyplane and comes back: while it is gone every request that needs
 * it fails fast with 503 and /readyz says so; once it is back, without a restart of keyplane, every
 * change acknowledged with 200 (before and after the outage) is stored and rendered.
 */
describe('fault: Postgres stops and returns', () => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'keyplane-fault-'));
  // Its own temp dir: as root, Postgres runs as `postgres`, which must be able to pass through it.
  const pgDir = mkdtempSync(path.join(os.tmpdir(), 'keyplane-fault-pg-'));
  const adminToken = 'adm_' + randomBytes(24).toString('base64url');
  let cluster: EmbeddedCluster;
  let kp: Keyplane;
  let logs = '';
  const acked = new Map<string, string>(); // key name -> last value acknowledged with 200

  beforeAll(async () => {
    cluster = await spawnEmbeddedPostgres(pgDir);
    const stream = new PassThrough();
    stream.on('data', (c: Buffer) => (logs += c.toString('utf8')));
    kp = await createKeyplane(
      loadSettings({
        KEYPLANE_DATABASE_URL: cluster.url,
        KEYPLANE_DATA_DIR: path.join(dir, 'kp'),
        KEYPLANE_LISTEN: '127.0.0.1:0',
        KEYPLANE_MASTER_KEY: Keyring.generateSpec('fault'),
        KEYPLANE_ADMIN_TOKEN: adminToken,
        KEYPLANE_LOG_LEVEL: 'debug',
        KEYPLANE_HEALTH_SCHEDULE: 'off',
      }),
      { logStream: stream },
    );
  }, 120_000);
  afterAll(async () => {
    await kp?.stop();
    http.globalAgent.destroy();
    await cluster?.close();
    rmSync(dir, { recursive: true, force: true });
    rmSync(pgDir, { recursive: true, force: true });
  });

  const api = () => request.agent(kp.url!).set('Authorization', `Bearer ${adminToken}`);
  const envVarOf = (name: string) => `${name.toUpperCase().replace(/-/g, '_')}_API_KEY`;
  const envFile = () => path.join(kp.settings.outputDir, 'litellm.env');

  async function put(name: string, value: string): Promise<request.Response> {
    const res = await api().put(`/api/v1/admin/platform-keys/${name}`).send({ api_key: value, env_var: envVarOf(name) });
    if (res.status === 200) acked.set(name, value);
    return res;
  }

  /** Polls until `fn` resolves truthy, or fails after the deadline. */
  async function until(what: string, fn: () => Promise<boolean>, timeoutMs = 30_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!(await fn())) {
      if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  const allRendered = (text: string) => [...acked].every(([name, value]) => envLine(text, envVarOf(name)) === value);

  it('answers 503 within 2 s while Postgres is down, then stores and renders every acknowledged change without a restart', async () => {
    for (const name of ['fault-one', 'fault-two', 'fault-three']) expect((await put(name, `sk-${name}-before-${randomBytes(6).toString('hex')}`)).status).toBe(200);
    await waitForFile(envFile(), allRendered);
    await request(kp.url!).get('/readyz').expect(200);

    await cluster.stop();

    const during: Array<[string, () => request.Test]> = [
      ['PUT existing', () => api().put('/api/v1/admin/platform-keys/fault-one').send({ api_key: 'sk-fault-one-during-0000', env_var: envVarOf('fault-one') })],
      ['PUT new', () => api().put('/api/v1/admin/platform-keys/fault-four').send({ api_key: 'sk-fault-four-during-000', env_var: envVarOf('fault-four') })],
      ['GET list', () => api().get('/api/v1/admin/platform-keys')],
      ['DELETE', () => api().delete('/api/v1/admin/platform-keys/fault-two')],
      // A token other than the bootstrap one is looked up in the database.
      ['API token', () => request(kp.url!).get('/api/v1/admin/platform-keys').set('Authorization', 'Bearer kp_some-api-token')],
    ];
    for (const [what, call] of during) {
      const started = Date.now();
      const res = await call();
      const took = Date.now() - started;
      expect([what, res.status, res.body.type]).toEqual([what, 503, 'https://keyplane.dev/problems/unavailable']);
      expect(res.headers['content-type']).toMatch(/problem\+json/);
      expect(Number(res.headers['retry-after'])).toBeGreaterThan(0);
      expect(took).toBeLessThan(2_000);
    }
    const ready = await request(kp.url!).get('/readyz');
    expect(ready.status).toBe(503);
    await request(kp.url!).get('/healthz').expect(200);

    await cluster.start();
    await until('/readyz to answer 200', async () => (await request(kp.url!).get('/readyz')).status === 200);

    expect((await put('fault-one', `sk-fault-one-after-${randomBytes(6).toString('hex')}`)).status).toBe(200);
    expect((await put('fault-five', `sk-fault-five-after-${randomBytes(6).toString('hex')}`)).status).toBe(200);
    const text = await waitForFile(envFile(), allRendered, 30_000);

    // Nothing answered with 503 was stored; everything answered with 200 was.
    expect(envLine(text, envVarOf('fault-four'))).toBeUndefined();
    expect(envLine(text, envVarOf('fault-two'))).toBe(acked.get('fault-two'));
    for (const [name, value] of acked) {
      const got = await api().get(`/api/v1/admin/platform-keys/${name}/decrypted`).expect(200);
      expect([name, got.body.api_key]).toEqual([name, value]);
    }
    await api().get('/api/v1/admin/platform-keys/fault-four').expect(404);
    // The outage is a warning that heals, not an error a person must act on.
    expect(logs).toMatch(/database unavailable/);
    for (const value of acked.values()) expect(logs).not.toContain(value);
  });
});

/** A host that accepts the connection and then says nothing (a hung server, a half-open path). */
describe('fault: a database that accepts connections but never answers', () => {
  let silent: Server;
  const sockets = new Set<Socket>();
  let url: string;
  beforeAll(async () => {
    silent = createServer((s) => {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
    });
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    url = `postgres://keyplane:x@127.0.0.1:${(silent.address() as AddressInfo).port}/keyplane`;
  });
  afterAll(async () => {
    for (const s of sockets) s.destroy();
    await new Promise((r) => silent.close(r));
  });

  it('a request that needs it gets 503 within 2 s (the pool gives up connecting), /readyz 503', async () => {
    const pool = createPool(url, { max: 2 });
    const routes = new RouteTable();
    routes.add({ method: 'get', path: '/api/v1/admin/probe', access: 'viewer', summary: 'probe', tag: 'test', handler: () => ({ ok: true }) });
    const app = createApp({
      log: createLogger({ secrets: new SecretRegistry(), silent: true }),
      metrics: createMetrics(),
      pool,
      auth: new Authenticator({ tokens: new TokensStore(pool), maxFailures: 100 }),
      routes,
      version: 'test',
    });
    try {
      for (const path of ['/api/v1/admin/probe', '/api/v1/admin/probe']) {
        const started = Date.now();
        // An API token is looked up in the database.
        const res = await request(app).get(path).set('Authorization', 'Bearer kp_some-api-token');
        expect([res.status, res.body.type]).toEqual([503, 'https://keyplane.dev/problems/unavailable']);
        expect(res.headers['retry-after']).toBe('2');
        expect(Date.now() - started).toBeLessThan(2_000);
      }
      await request(app).get('/readyz').expect(503);
    } finally {
      await pool.end().catch(() => undefined);
    }
  });
});

describe('isUnavailable', () => {
  it.each([
    ['ECONNREFUSED', { code: 'ECONNREFUSED', message: 'connect ECONNREFUSED 127.0.0.1:5432' }],
    ['ECONNRESET', { code: 'ECONNRESET', message: 'read ECONNRESET' }],
    ['57P01 admin shutdown', { code: '57P01', message: 'terminating connection due to administrator command' }],
    ['57P03 cannot connect now', { code: '57P03', message: 'the database system is shutting down' }],
    ['08006 connection failure', { code: '08006', message: 'connection failure' }],
    ['08001 cannot establish', { code: '08001', message: 'could not connect' }],
    ['pool wait timeout', new Error('timeout exceeded when trying to connect')],
    ['connect timeout', new Error('Connection terminated due to connection timeout')],
    ['lost connection', new Error('Connection terminated unexpectedly')],
  ])('%s: yes', (_what, err) => expect(isUnavailable(err)).toBe(true));

  it.each([
    ['unique violation', { code: '23505', message: 'duplicate key' }],
    ['bad input', { code: '22P02', message: 'invalid input syntax' }],
    ['serialization failure', { code: '40001', message: 'could not serialize access' }],
    ['a plain error', new Error('boom')],
    ['a message that only mentions a timeout', new Error('upstream said: timeout exceeded when trying to connect')],
    ['not an object', 'ECONNREFUSED'],
  ])('%s: no', (_what, err) => expect(isUnavailable(err)).toBe(false));
});
