import { createServer, type IncomingHttpHeaders, type ServerResponse } from 'node:http';
import { createServer as createNetServer, type AddressInfo } from 'node:net';
import { EventEmitter } from 'node:events';

/**
 * How a fake provider answers: `hang` never answers; `hold` answers only at release();
 * `not_ready` is for LiteLLM (liveliness 200, readiness 503).
 */
export type FakeMode = 'ok' | 'error' | 'unauthorized' | 'forbidden' | 'rate_limited' | 'slow' | 'hang' | 'hold' | 'not_json' | 'not_ready';

export interface FakeRequest {
  name: string;
  path: string;
  url: string;
  headers: IncomingHttpHeaders;
  key: string | undefined;
}

export interface FakeProvider {
  /** `http://127.0.0.1:<port>` */
  url: string;
  /** The api_base of the fake named `name`: every path under it answers in that name's mode. */
  base(name: string): string;
  setMode(name: string, mode: FakeMode, delayMs?: number): void;
  /** Only these keys are accepted for `name` (the others are refused as the real API would); undefined accepts any. */
  acceptKeys(name: string, keys: string[] | undefined): void;
  requests: FakeRequest[];
  requestsFor(name: string): FakeRequest[];
  /** Resolves once `name` has received `n` requests (or rejects after `timeoutMs`). */
  waitForRequests(name: string, n: number, timeoutMs?: number): Promise<void>;
  /** Answers every held request with 200. */
  release(): void;
  /** Forgets requests, modes and accepted keys (between tests sharing one fake). */
  reset(): void;
  close(): Promise<void>;
}

function keyOf(h: IncomingHttpHeaders): string | undefined {
  const bearer = /^Bearer (.+)$/.exec(String(h.authorization ?? ''))?.[1];
  const v = bearer ?? h['x-api-key'] ?? h['x-goog-api-key'] ?? h['api-key'];
  return Array.isArray(v) ? v[0] : v;
}

function json(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
}

/** The answer each real API gives to a refused key; OpenAI's echoes part of the key in its message. */
function refuse(res: ServerResponse, req: FakeRequest, status: 401 | 403): void {
  if (req.headers['x-goog-api-key'] !== undefined && status === 401) {
    json(res, 400, {
      error: { code: 400, message: 'API key not valid. Please pass a valid API key.', status: 'INVALID_ARGUMENT', details: [{ '@type': 'type.googleapis.com/google.rpc.ErrorInfo', reason: 'API_KEY_INVALID' }] },
    });
  } else if (req.headers['x-api-key'] !== undefined) {
    json(res, status, { type: 'error', error: { type: status === 401 ? 'authentication_error' : 'permission_error', message: 'invalid x-api-key' } });
  } else {
    json(res, status, { error: { message: `Incorrect API key provided: ${req.key ?? ''}`, type: 'invalid_request_error', code: 'invalid_api_key' } });
  }
}

function answerOk(res: ServerResponse, req: FakeRequest): void {
  if (req.path.endsWith('/health/liveliness')) return json(res, 200, "I'm alive!");
  if (req.path.endsWith('/health/readiness')) return json(res, 200, { status: 'healthy', db: 'connected', cache: null, litellm_version: '1.81.15' });
  if (req.path.endsWith('/key')) return json(res, 200, { data: { label: 'sk-or-v1-abc...xyz', limit: null, usage: 0 } });
  if (req.headers['x-goog-api-key'] !== undefined) return json(res, 200, { models: [{ name: 'models/gemini-2.0-flash' }] });
  return json(res, 200, { object: 'list', data: [{ id: 'fake-model', object: 'model' }] });
}

/** A fake of every provider kind (and of LiteLLM's health endpoints) on 127.0.0.1. */
export async function startFakeProvider(): Promise<FakeProvider> {
  const modes = new Map<string, { mode: FakeMode; delayMs: number }>();
  const accepted = new Map<string, Set<string>>();
  const requests: FakeRequest[] = [];
  const held: Array<() => void> = [];
  const timers = new Set<NodeJS.Timeout>();
  const events = new EventEmitter();
  events.setMaxListeners(0);

  const server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://fake');
    const name = url.pathname.split('/')[1] ?? '';
    const r: FakeRequest = { name, path: url.pathname, url: req.url ?? '', headers: req.headers, key: keyOf(req.headers) };
    requests.push(r);
    events.emit('request', r);
    const { mode, delayMs } = modes.get(name) ?? { mode: 'ok', delayMs: 0 };
    const keys = accepted.get(name);
    const ok = (): void => (keys && !keys.has(r.key ?? '') ? refuse(res, r, 401) : answerOk(res, r));
    switch (mode) {
      case 'ok':
        return ok();
      case 'error':
        return json(res, 500, { error: { message: 'internal error', type: 'server_error' } });
      case 'unauthorized':
        return refuse(res, r, 401);
      case 'forbidden':
        return refuse(res, r, 403);
      case 'rate_limited':
        return json(res, 429, { error: { message: 'rate limit reached', type: 'rate_limit_error', code: 'rate_limit_exceeded' } });
      case 'not_json':
        res.writeHead(200, { 'content-type': 'text/html' }).end('<html>captive portal</html>');
        return;
      case 'not_ready':
        if (r.path.endsWith('/health/readiness')) return json(res, 503, { status: 'unhealthy', db: 'Not connected', litellm_version: '1.81.15' });
        return ok();
      case 'slow': {
        const t = setTimeout(() => {
          timers.delete(t);
          ok();
        }, delayMs);
        timers.add(t);
        return;
      }
      case 'hold':
        held.push(ok);
        return;
      case 'hang':
        return;
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const requestsFor = (name: string): FakeRequest[] => requests.filter((r) => r.name === name);

  return {
    url,
    base: (name) => `${url}/${name}`,
    setMode: (name, mode, delayMs = 0) => void modes.set(name, { mode, delayMs }),
    acceptKeys: (name, keys) => void (keys ? accepted.set(name, new Set(keys)) : accepted.delete(name)),
    requests,
    requestsFor,
    waitForRequests(name, n, timeoutMs = 5000) {
      if (requestsFor(name).length >= n) return Promise.resolve();
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          events.off('request', on);
          reject(new Error(`fake provider ${name} got ${requestsFor(name).length} of ${n} requests`));
        }, timeoutMs);
        const on = (): void => {
          if (requestsFor(name).length < n) return;
          clearTimeout(timer);
          events.off('request', on);
          resolve();
        };
        events.on('request', on);
      });
    },
    release() {
      for (const answer of held.splice(0)) answer();
    },
    reset() {
      requests.length = 0;
      modes.clear();
      accepted.clear();
    },
    async close() {
      for (const t of timers) clearTimeout(t);
      held.length = 0;
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** A loopback port with nothing listening on it. */
export async function closedPort(): Promise<number> {
  const srv = createNetServer();
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const port = (srv.address() as AddressInfo).port;
  await new Promise<void>((resolve) => srv.close(() => resolve()));
  return port;
}
