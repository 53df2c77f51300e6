import { createServer, type IncomingHttpHeaders, type ServerResponse } from 'node:http';
import { createServer as createNetServer, type AddressInfo } from 'node:net';
import { EventEmitter } from 'node:events';

/**
 * How a fake provider answers: `hang` never answers; `hold` answers only at release();
 * `not_ready` is for LiteLLM (liveliness 200, readiness 503).
 */
export type FakeMode = 'ok' | 'error' | 'unauthorized' | 'forbidden' | 'rate_limited' | 'slow' | 'hang' | 'hold' | 'not_json' | 'not_ready';

/**
 * How a fake answers one key (set with `keyAnswer`), whatever the fake's mode: `payment_required` is
 * OpenRouter's 402, `insufficient_quota` OpenAI's 429 for an account out of credit, `rate_limited` a
 * 429 with `Retry-After` when one is given.
 */
export type KeyAnswer = 'ok' | 'unauthorized' | 'forbidden' | 'payment_required' | 'insufficient_quota' | 'rate_limited' | 'error';

/** What OpenRouter's key record reports; `limit` null: no limit. */
export interface FakeCredit {
  limit: number | null;
  usage: number;
}

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
  /** How `name` answers `key` on every path (undefined: as the mode says); `retryAfter` is sent with `rate_limited`. */
  keyAnswer(name: string, key: string, answer: KeyAnswer | undefined, opts?: { retryAfter?: string }): void;
  /** What `name`'s key record (`.../key`) reports for `key`. */
  setCredit(name: string, key: string, credit: FakeCredit | undefined): void;
  /** `name`'s model list answers 200 to any key, as OpenRouter's does (the key answers apply elsewhere). */
  publicModels(name: string, on: boolean): void;
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

function answerOk(res: ServerResponse, req: FakeRequest, credit?: FakeCredit): void {
  if (req.path.endsWith('/health/liveliness')) return json(res, 200, "I'm alive!");
  if (req.path.endsWith('/health/readiness')) return json(res, 200, { status: 'healthy', db: 'connected', cache: null, litellm_version: '1.81.15' });
  if (req.path.endsWith('/key')) {
    if (!credit) return json(res, 200, { data: { label: 'sk-or-v1-abc...xyz', limit: null, usage: 0 } });
    const remaining = credit.limit === null ? null : credit.limit - credit.usage;
    return json(res, 200, { data: { label: 'sk-or-v1-abc...xyz', limit: credit.limit, usage: credit.usage, limit_remaining: remaining, is_free_tier: false } });
  }
  if (req.headers['x-goog-api-key'] !== undefined) return json(res, 200, { models: [{ name: 'models/gemini-2.0-flash' }] });
  return json(res, 200, { object: 'list', data: [{ id: 'fake-model', object: 'model' }] });
}

/** The answers real APIs give for each per-key case (shapes of OpenRouter, OpenAI and Anthropic). */
function answerKey(res: ServerResponse, req: FakeRequest, answer: KeyAnswer, retryAfter: string | undefined, credit: FakeCredit | undefined): void {
  switch (answer) {
    case 'ok':
      return answerOk(res, req, credit);
    case 'unauthorized':
      return refuse(res, req, 401);
    case 'forbidden':
      return refuse(res, req, 403);
    case 'payment_required':
      return json(res, 402, { error: { code: 402, message: 'Insufficient credits. Add more using https://openrouter.ai/credits' } });
    case 'insufficient_quota':
      return json(res, 429, { error: { message: 'You exceeded your current quota, please check your plan and billing details.', type: 'insufficient_quota', param: null, code: 'insufficient_quota' } });
    case 'rate_limited':
      res.writeHead(429, { 'content-type': 'application/json', ...(retryAfter !== undefined ? { 'retry-after': retryAfter } : {}) });
      res.end(JSON.stringify({ error: { message: 'rate limit reached', type: 'rate_limit_error', code: 'rate_limit_exceeded' } }));
      return;
    case 'error':
      return json(res, 500, { error: { message: 'internal error', type: 'server_error' } });
  }
}

/** A fake of every provider kind (and of LiteLLM's health endpoints) on 127.0.0.1. */
export async function startFakeProvider(): Promise<FakeProvider> {
  const modes = new Map<string, { mode: FakeMode; delayMs: number }>();
  const accepted = new Map<string, Set<string>>();
  const keyAnswers = new Map<string, { answer: KeyAnswer; retryAfter?: string }>();
  const credits = new Map<string, FakeCredit>();
  const openModels = new Set<string>();
  const perKey = (name: string, key: string | undefined): string => `${name}\u0000${key ?? ''}`;
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
    const ok = (): void => {
      const credit = credits.get(perKey(name, r.key));
      if (openModels.has(name) && r.path.endsWith('/models')) return answerOk(res, r);
      const own = keyAnswers.get(perKey(name, r.key));
      if (own) return answerKey(res, r, own.answer, own.retryAfter, credit);
      return keys && !keys.has(r.key ?? '') ? refuse(res, r, 401) : answerOk(res, r, credit);
    };
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
    keyAnswer: (name, key, answer, opts = {}) => void (answer ? keyAnswers.set(perKey(name, key), { answer, retryAfter: opts.retryAfter }) : keyAnswers.delete(perKey(name, key))),
    setCredit: (name, key, credit) => void (credit ? credits.set(perKey(name, key), credit) : credits.delete(perKey(name, key))),
    publicModels: (name, on) => void (on ? openModels.add(name) : openModels.delete(name)),
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
      keyAnswers.clear();
      credits.clear();
      openModels.clear();
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
