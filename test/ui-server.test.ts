import { readFileSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import request from 'supertest';
import { Authenticator } from '../src/http/auth';
import { createApp } from '../src/http/app';
import { RouteTable } from '../src/http/route-table';
import { UI_CSP } from '../src/http/ui-static';
import { createMetrics } from '../src/metrics';
import type { RoundResult } from '../src/health/prober';
import { SseParser, type SseEvent } from '../ui/src/logic/sse';
import { startTestApp, type TestApp } from './helpers/app';
import { until } from './helpers/wait';

/** Issue 13: how keyplane serves its dashboard (static files, policy, caching) and the API the dashboard adds (whoami, live events). */

const UI_DIR = path.join(__dirname, '..', 'dist', 'ui');

/** A server-sent event stream read the way the dashboard reads it: fetch with the bearer token, parsed by its own parser. */
async function openStream(url: string, token: string): Promise<{ next(): Promise<SseEvent>; ended(): Promise<'done' | 'error'>; close(): void; status: number }> {
  const abort = new AbortController();
  const res = await fetch(`${url}/api/v1/admin/events`, { headers: { authorization: `Bearer ${token}` }, signal: abort.signal });
  const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
  const parser = new SseParser();
  const queue: SseEvent[] = [];
  return {
    status: res.status,
    async next() {
      while (!queue.length) {
        const { value, done } = await reader.read();
        if (done) throw new Error('the stream ended');
        queue.push(...parser.push(value));
      }
      return queue.shift()!;
    },
    async ended() {
      try {
        for (;;) if ((await reader.read()).done) return 'done';
      } catch {
        return 'error';
      }
    },
    close: () => abort.abort(),
  };
}

describe('the dashboard, as served', () => {
  let t: TestApp;
  let viewer: string;

  beforeAll(async () => {
    t = await startTestApp();
    viewer = (await t.kp.tokens.create('ui-viewer', 'viewer', 'test')).token;
  });
  afterAll(async () => {
    await t?.close();
  });

  it('serves /ui/ with a policy that allows its own files only: no inline script or style, no eval, no form posts, Trusted Types', async () => {
    const redirect = await request(t.kp.url!).get('/ui').expect(301);
    expect(redirect.headers.location).toBe('/ui/');
    const res = await request(t.kp.url!).get('/ui/').expect(200);
    expect(res.headers['content-type']).toMatch(/^text\/html/);
    expect(res.headers['content-security-policy']).toBe(UI_CSP);
    expect(UI_CSP).toContain("script-src 'self'");
    expect(UI_CSP).not.toMatch(/unsafe-inline|unsafe-eval|data:|\*/);
    expect(res.headers['x-frame-options']).toBe('DENY');
    // The page is asked for again each time (a new build is seen at once); its assets never are.
    expect(res.headers['cache-control']).toBe('no-cache');
    const html = res.text;
    const scripts = [...html.matchAll(/<script\b([^>]*)>([\s\S]*?)<\/script>/g)];
    expect(scripts.length).toBeGreaterThan(0);
    for (const [, attrs, body] of scripts) {
      expect(attrs).toMatch(/src="\/ui\/assets\/[^"]+\.js"/);
      expect(body!.trim()).toBe('');
    }
    expect(html).not.toMatch(/<style|\sstyle=|\son[a-z]+=/i);

    const js = /src="(\/ui\/assets\/[^"]+\.js)"/.exec(html)![1]!;
    const asset = await request(t.kp.url!).get(js).expect(200);
    expect(asset.headers['content-type']).toMatch(/javascript/);
    expect(asset.headers['cache-control']).toBe('public, max-age=31536000, immutable');
    // Nothing in the bundle parses HTML or evaluates strings (the policy would stop it; the code does not try).
    expect(asset.text).not.toMatch(/\.innerHTML\s*=|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function\(/);
    // Files of ui/public keep their names: asked for again each time.
    expect((await request(t.kp.url!).get('/ui/favicon.svg').expect(200)).headers['cache-control']).toBe('no-cache');
    const css = /href="(\/ui\/assets\/[^"]+\.css)"/.exec(html)![1]!;
    expect((await request(t.kp.url!).get(css).expect(200)).headers['cache-control']).toBe('public, max-age=31536000, immutable');
    expect(readFileSync(path.join(UI_DIR, css.replace('/ui/', '')), 'utf8')).not.toContain('data:');
  });

  it('answers a missing file with problem+json, never leaves its folder, and keeps the API strict', async () => {
    const missing = await request(t.kp.url!).get('/ui/assets/nope-12345678.js').expect(404);
    expect(missing.headers['content-type']).toMatch(/^application\/problem\+json/);
    const climb = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      http
        .get(`${t.kp.url}/ui/%2e%2e/%2e%2e/package.json`, (res) => {
          let body = '';
          res.on('data', (c: Buffer) => (body += c.toString('utf8')));
          res.on('end', () => resolve({ status: res.statusCode!, body }));
        })
        .on('error', reject);
    });
    expect(climb.status).toBeGreaterThanOrEqual(400);
    expect(climb.body).not.toContain('"devDependencies"');
    // The API's own policy is untouched: it loads nothing.
    const api = await t.api().get('/api/v1/admin/whoami').expect(200);
    expect(api.headers['content-security-policy']).toContain("default-src 'none'");
    expect(api.headers['content-security-policy']).not.toContain("script-src 'self'");
  });

  it('says the dashboard is not built when it is not', async () => {
    const app = createApp({
      log: t.kp.log,
      metrics: createMetrics(),
      pool: t.kp.pool,
      auth: new Authenticator({ tokens: t.kp.tokens, maxFailures: 10 }),
      routes: new RouteTable(),
      version: 'test',
      uiDir: path.join(t.dir, 'no-ui-here'),
    });
    const res = await request(app).get('/ui/').expect(404);
    expect(res.body).toMatchObject({ title: 'Dashboard not built', detail: expect.stringContaining('npm run build') });
    expect(res.body.detail).not.toContain(t.dir);
  });

  it('GET /api/v1/admin/whoami says who the token is, and refuses without one', async () => {
    expect((await t.api().get('/api/v1/admin/whoami').expect(200)).body).toEqual({ actor: 'bootstrap', role: 'admin', via: 'bootstrap' });
    const v = await request(t.kp.url!).get('/api/v1/admin/whoami').set('Authorization', `Bearer ${viewer}`).expect(200);
    expect(v.body).toEqual({ actor: 'token:ui-viewer', role: 'viewer', via: 'token' });
    expect(v.headers['cache-control']).toBe('no-store');
    await request(t.kp.url!).get('/api/v1/admin/whoami').expect(401);
  });

  it('GET /api/v1/admin/events: a hello, then one coalesced nudge per burst, names only; viewers may read it, strangers may not', async () => {
    await request(t.kp.url!).get('/api/v1/admin/events').expect(401);
    const s = await openStream(t.kp.url!, viewer);
    try {
      expect(s.status).toBe(200);
      expect(await s.next()).toEqual({ event: 'hello', data: JSON.stringify({ leader: true }) });
      await until('the stream is registered', () => t.kp.live!.size === 1);

      // A real change: the key's rows notify the watcher, then the render follows.
      await t.api().put('/api/v1/admin/platform-keys/openrouter').send({ api_key: 'sk-or-ui-server-secret-0001' }).expect(200);
      const topics = new Set<string>();
      while (!topics.has('keys') || !topics.has('sync')) {
        const ev = await s.next();
        expect(ev.event).toBe('change');
        for (const topic of (JSON.parse(ev.data) as { topics: string[] }).topics) topics.add(topic);
      }
      expect([...topics].every((x) => ['keys', 'sync', 'reload', 'config'].includes(x))).toBe(true);

      // A burst in one tick is one message; the next message is the next burst's.
      for (let i = 0; i < 100; i++) t.kp.events.emit('watcher:notification', { table: i % 2 ? 'models' : 'platform_keys', op: 'UPDATE', id: String(i) });
      expect(await s.next()).toEqual({ event: 'change', data: JSON.stringify({ topics: ['config', 'keys'] }) });
      t.kp.events.emit('health:round-done', {} as RoundResult);
      expect(await s.next()).toEqual({ event: 'change', data: JSON.stringify({ topics: ['health'] }) });
    } finally {
      s.close();
    }
    await until('the stream is forgotten once the client leaves', () => t.kp.live!.size === 0);
  });

  it('stop() ends open streams cleanly instead of leaving them to the server to cut', async () => {
    const other = await startTestApp();
    const s = await openStream(other.kp.url!, other.adminToken);
    expect((await s.next()).event).toBe('hello');
    const ended = s.ended();
    await other.close();
    expect(await ended).toBe('done');
  });
});
