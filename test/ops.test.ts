import request from 'supertest';
import type { Express } from 'express';
import { startTestApp, type TestApp } from './helpers/app';
import { adminUrl } from './helpers/db';
import { until } from './helpers/wait';
import pg from 'pg';

/** Every route Express actually has mounted (method + path), read from its router stack. */
function mountedRoutes(app: Express): Array<{ method: string; path: string }> {
  const out: Array<{ method: string; path: string }> = [];
  const walk = (stack: unknown[]): void => {
    for (const layer of stack as Array<{ route?: { path: string; methods: Record<string, boolean> }; handle?: { stack?: unknown[] } }>) {
      if (layer.route) for (const m of Object.keys(layer.route.methods)) out.push({ method: m, path: layer.route.path });
      else if (layer.handle?.stack) walk(layer.handle.stack);
    }
  };
  walk((app as unknown as { router: { stack: unknown[] } }).router.stack);
  return out;
}

describe('health, readiness, metrics, OpenAPI', () => {
  let t: TestApp;
  beforeAll(async () => {
    t = await startTestApp();
  });
  afterAll(async () => {
    await t.close();
  });

  it('GET /healthz and /readyz need no auth', async () => {
    const h = await request(t.kp.url!).get('/healthz').expect(200);
    expect(h.body.status).toBe('ok');
    const r = await request(t.kp.url!).get('/readyz').expect(200);
    expect(r.body).toEqual({ status: 'ready', database: 'ok' });
  });

  it('every mounted route is in openapi.json, with its access level', async () => {
    const res = await request(t.kp.url!).get('/api/v1/openapi.json').expect(200);
    const spec = res.body;
    expect(spec.openapi).toBe('3.1.0');
    const mounted = mountedRoutes(t.kp.app!);
    expect(mounted.length).toBeGreaterThan(25);
    const missing = mounted
      .filter((r) => !['/healthz', '/readyz', '/metrics', '/api/v1/openapi.json'].includes(r.path))
      .filter((r) => !spec.paths[r.path.replace(/:([A-Za-z_]+)/g, '{$1}')]?.[r.method]);
    expect(missing).toEqual([]);
    const put = spec.paths['/api/v1/admin/platform-keys/{name}'].put;
    expect(put['x-access']).toBe('operator');
    expect(put.requestBody.content['application/json'].schema.properties.api_key).toBeDefined();
  });

  it('GET /metrics counts requests by route and status', async () => {
    await t.api().get('/api/v1/admin/platform-keys/none-such').expect(404);
    await t.api().get('/api/v1/admin/platform-keys').expect(200);
    const m = await request(t.kp.url!).get('/metrics').expect(200);
    expect(m.headers['content-type']).toMatch(/text\/plain/);
    expect(m.text).toMatch(/keyplane_http_requests_total\{method="GET",route="\/api\/v1\/admin\/platform-keys\/:name",status="404"\} 1/);
    expect(m.text).toMatch(/keyplane_http_request_duration_seconds_bucket\{le="0.005",method="GET",route="\/api\/v1\/admin\/platform-keys"/);
    expect(m.text).toMatch(/keyplane_keys\{state="active"\} 0/);
  });

  it('GET /readyz is 503 while the database is unreachable, 200 again after', async () => {
    const admin = new pg.Client({ connectionString: adminUrl() });
    await admin.connect();
    const relistening = t.kp.events.waitFor('watcher:connected', (e) => e.reconnect, 30_000);
    try {
      await admin.query(`ALTER DATABASE ${t.db.name} ALLOW_CONNECTIONS false`);
      await admin.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1', [t.db.name]);
      const down = await request(t.kp.url!).get('/readyz');
      expect(down.status).toBe(503);
      expect(down.headers['content-type']).toMatch(/problem\+json/);
      await request(t.kp.url!).get('/healthz').expect(200);
    } finally {
      await admin.query(`ALTER DATABASE ${t.db.name} ALLOW_CONNECTIONS true`);
      await admin.end();
    }
    // The LISTEN session was cut too; it comes back on its own (and the test ends only then).
    await relistening;
    await until('/readyz answers 200 again', async () => (await request(t.kp.url!).get('/readyz')).status === 200);
  });
});
