import http from 'node:http';
import { KIND_DEFAULTS, type ProbeStyle } from '../destinations';
import { trimSlashes } from '../url';
import https from 'node:https';
import { performance } from 'node:perf_hooks';

export type HealthStatus = 'healthy' | 'degraded' | 'down' | 'unknown';
export const HEALTH_STATUSES: HealthStatus[] = ['healthy', 'degraded', 'down', 'unknown'];

/**
 * Why a status is what it is. `auth_failed` means the key is bad, not the provider; `no_key`,
 * `disabled` and `unsupported` are `unknown` without a probe; `not_ready` is LiteLLM's readiness.
 */
export type HealthReason =
  | 'ok'
  | 'slow'
  | 'rate_limited'
  | 'auth_failed'
  | 'server_error'
  | 'bad_response'
  | 'timeout'
  | 'unreachable'
  | 'not_ready'
  | 'no_key'
  | 'disabled'
  | 'unsupported'
  | 'not_approved'
  | 'never_checked';

/** What one probe saw, before hysteresis. `detail` never holds a secret or a URL. */
export interface Observation {
  status: HealthStatus;
  reason: HealthReason;
  latencyMs: number | null;
  httpStatus: number | null;
  detail: string;
  checkedAt: Date;
}

export interface LitellmObservation extends Observation {
  version: string | null;
}

export interface ProbeTarget {
  kind: string;
  apiBase: string | null;
  apiKey: string;
  degradedMs: number;
}

export interface ProbeOptions {
  timeoutMs: number;
  /** Aborts the probe early (the prober's stop()). */
  signal?: AbortSignal;
  /** Connection reuse across a round; Node's global agents when absent. */
  agents?: ProbeAgents;
  now?: () => Date;
}

type Style = ProbeStyle;

/** The public API base per provider kind, used when `providers.api_base` is null. */
export const DEFAULT_API_BASES = KIND_DEFAULTS;

// Kinds with their own wire format even behind a custom api_base (azure has no public default).
const STYLE_OF_KIND: Record<string, Style> = { azure: 'azure' };

const ANTHROPIC_VERSION = '2023-06-01';
const AZURE_API_VERSION = '2024-10-21';
// A 2xx body above this size is not parsed; the probe only needs to know the provider answered.
const BODY_CAP = 1024 * 1024;

export interface ProbeRequest {
  url: string;
  headers: Record<string, string>;
}

/**
 * The one unbilled request that tells whether a key works: list models (or, for OpenRouter, whose
 * model list is public, read the key's own record). Keys go in headers only, never in the URL.
 * Undefined when the kind is unknown and has no api_base to speak OpenAI to.
 */
export function buildProbeRequest(kind: string, apiBase: string | null, apiKey: string): ProbeRequest | undefined {
  const known = DEFAULT_API_BASES[kind];
  const given = apiBase ?? known?.base;
  const base = given === undefined ? undefined : trimSlashes(given);
  if (!base) return undefined;
  const style: Style = STYLE_OF_KIND[kind] ?? known?.style ?? 'openai';
  const bearer = { authorization: `Bearer ${apiKey}` };
  switch (style) {
    case 'openai':
      return { url: `${base}/models`, headers: bearer };
    case 'openrouter':
      return { url: `${base}/key`, headers: bearer };
    case 'anthropic':
      return { url: `${base.replace(/\/v1$/, '')}/v1/models?limit=1`, headers: { 'x-api-key': apiKey, 'anthropic-version': ANTHROPIC_VERSION } };
    case 'gemini':
      return { url: `${base}/models?pageSize=1`, headers: { 'x-goog-api-key': apiKey } };
    case 'azure':
      return { url: `${base}/openai/models?api-version=${AZURE_API_VERSION}`, headers: { 'api-key': apiKey } };
    case 'ollama':
      return { url: `${base}/api/tags`, headers: bearer };
  }
}

/** An observation that needs no request: no key, disabled, unsupported kind. */
export function unprobed(reason: 'no_key' | 'disabled' | 'unsupported' | 'not_approved', detail: string, now: Date): Observation {
  return { status: 'unknown', reason, latencyMs: null, httpStatus: null, detail, checkedAt: now };
}

/**
 * What one probe request brought back, before anyone judged it: the provider's health
 * (`observe`) and the key's (key-findings.ts) are both read from it, so one request serves both.
 * `endpoint` is the method and path that was asked (`GET /api/v1/key`): no host, no query.
 */
export type ProbeAnswer =
  | { kind: 'unsupported'; detail: string }
  | { kind: 'answer'; endpoint: string; status: number; latencyMs: number; body: string | undefined; retryAfter: string | undefined; checkedAt: Date }
  | { kind: 'network'; endpoint: string; network: 'timeout' | 'unreachable'; latencyMs: number; detail: string; checkedAt: Date };

/** Sends the probe request of `target`'s kind with its key (see buildProbeRequest). */
export async function sendProbe(target: Omit<ProbeTarget, 'degradedMs'>, opts: ProbeOptions): Promise<ProbeAnswer> {
  const now = opts.now ?? (() => new Date());
  const req = buildProbeRequest(target.kind, target.apiBase, target.apiKey);
  if (!req) return { kind: 'unsupported', detail: `no probe for kind ${target.kind} without an api_base` };
  const endpoint = `GET ${endpointPath(req.url)}`;
  const r = await httpGet(req, opts);
  const checkedAt = now();
  if ('network' in r) return { kind: 'network', endpoint, network: r.network, latencyMs: r.latencyMs, detail: r.detail, checkedAt };
  return { kind: 'answer', endpoint, status: r.status, latencyMs: r.latencyMs, body: r.body, retryAfter: r.retryAfter, checkedAt };
}

/** The provider's health as one answer shows it. */
export function observe(answer: ProbeAnswer, degradedMs: number, apiKey: string, now: Date): Observation {
  if (answer.kind === 'unsupported') return unprobed('unsupported', answer.detail, now);
  if (answer.kind === 'network') return { status: 'down', reason: answer.network, latencyMs: answer.latencyMs, httpStatus: null, detail: answer.detail, checkedAt: answer.checkedAt };
  return { ...classify(answer.status, answer.latencyMs, degradedMs, answer.body, apiKey), latencyMs: answer.latencyMs, httpStatus: answer.status, checkedAt: answer.checkedAt };
}

export async function probeProvider(target: ProbeTarget, opts: ProbeOptions): Promise<Observation> {
  const now = opts.now ?? (() => new Date());
  return observe(await sendProbe(target, opts), target.degradedMs, target.apiKey, now());
}

function endpointPath(url: string): string {
  try {
    return new URL(url).pathname;
  } catch {
    return '(invalid URL)';
  }
}

/** LiteLLM itself: liveliness says the process answers, readiness says it can serve (its DB, cache). */
export async function probeLitellm(url: string, opts: ProbeOptions & { degradedMs?: number }): Promise<LitellmObservation> {
  const now = opts.now ?? (() => new Date());
  const base = trimSlashes(url);
  const [live, ready] = await Promise.all([
    httpGet({ url: `${base}/health/liveliness`, headers: {} }, opts),
    httpGet({ url: `${base}/health/readiness`, headers: {} }, opts),
  ]);
  const checkedAt = now();
  if ('network' in live) return { status: 'down', reason: live.network, latencyMs: live.latencyMs, httpStatus: null, detail: `liveliness: ${live.detail}`, checkedAt, version: null };
  if (live.status < 200 || live.status > 299) {
    return { status: 'down', reason: live.status >= 500 ? 'server_error' : 'bad_response', latencyMs: live.latencyMs, httpStatus: live.status, detail: `liveliness answered HTTP ${live.status}`, checkedAt, version: null };
  }
  const latencyMs = Math.max(live.latencyMs, ready.latencyMs);
  if ('network' in ready) return { status: 'degraded', reason: 'not_ready', latencyMs, httpStatus: null, detail: `readiness: ${ready.detail}`, checkedAt, version: null };
  const doc = parseJson(ready.body);
  const version = safeToken(field(doc, 'litellm_version')) ?? null;
  if (ready.status < 200 || ready.status > 299) {
    const parts = ['status', 'db', 'cache'].map((k) => [k, safeToken(field(doc, k))]).filter(([, v]) => v).map(([k, v]) => `${k}=${v}`);
    return { status: 'degraded', reason: 'not_ready', latencyMs, httpStatus: ready.status, detail: `readiness answered HTTP ${ready.status}${parts.length ? ` (${parts.join(', ')})` : ''}`, checkedAt, version };
  }
  const slow = latencyMs > (opts.degradedMs ?? 2000);
  return { status: slow ? 'degraded' : 'healthy', reason: slow ? 'slow' : 'ok', latencyMs, httpStatus: ready.status, detail: slow ? `answered in ${latencyMs} ms` : 'ok', checkedAt, version };
}

/** Error codes that mean the key was refused, whatever the HTTP status (Gemini: 400 API_KEY_INVALID). */
export const AUTH_CODES = /^(API_KEY_INVALID|invalid_api_key|authentication_error|permission_error|UNAUTHENTICATED|PERMISSION_DENIED)$/i;

/** Maps an HTTP answer to a status and reason. The provider's error codes are kept; its messages are not (they can echo the key). */
export function classify(status: number, latencyMs: number, degradedMs: number, body: string | undefined, apiKey = ''): Pick<Observation, 'status' | 'reason' | 'detail'> {
  if (status >= 200 && status <= 299) {
    if (body && parseJson(body) === undefined) return { status: 'down', reason: 'bad_response', detail: `HTTP ${status} with a body that is not JSON` };
    if (latencyMs > degradedMs) return { status: 'degraded', reason: 'slow', detail: `answered in ${latencyMs} ms (limit ${degradedMs} ms)` };
    return { status: 'healthy', reason: 'ok', detail: 'ok' };
  }
  const codes = errorCodes(parseJson(body)).filter((c) => !apiKey || !c.includes(apiKey));
  const detail = `HTTP ${status}${codes.length ? ` (${codes.join(', ')})` : ''}`;
  // Gemini answers a bad key with 400 API_KEY_INVALID rather than 401.
  if (status === 401 || status === 403 || codes.some((c) => AUTH_CODES.test(c))) return { status: 'down', reason: 'auth_failed', detail: `the provider refused the key: ${detail}` };
  if (status === 429) return { status: 'degraded', reason: 'rate_limited', detail };
  if (status >= 500) return { status: 'down', reason: 'server_error', detail };
  return { status: 'down', reason: 'bad_response', detail };
}

type HttpAnswer = { status: number; latencyMs: number; body: string | undefined; retryAfter: string | undefined } | { network: 'timeout' | 'unreachable'; latencyMs: number; detail: string };

/** Keep-alive agents a prober owns (and destroys at stop), so a round reuses connections. */
export interface ProbeAgents {
  http: http.Agent;
  https: https.Agent;
}

export function createProbeAgents(): ProbeAgents {
  return { http: new http.Agent({ keepAlive: true }), https: new https.Agent({ keepAlive: true }) };
}

// node:http rather than fetch: a round makes hundreds of requests, and fetch costs about twice the CPU per request.
function httpGet(req: ProbeRequest, opts: ProbeOptions): Promise<HttpAnswer> {
  const started = performance.now();
  const elapsed = (): number => Math.round(performance.now() - started);
  let url: URL;
  try {
    url = new URL(req.url);
    if (!/^https?:$/.test(url.protocol) || url.username || url.password) throw new Error('scheme');
  } catch {
    return Promise.resolve({ network: 'unreachable', latencyMs: 0, detail: 'the api_base is not a usable http(s) URL' });
  }
  const secure = url.protocol === 'https:';
  // AbortSignal.timeout runs on the real clock, so fake timers in tests never fire it early.
  const timeout = AbortSignal.timeout(opts.timeoutMs);
  return new Promise<HttpAnswer>((resolve) => {
    const onStop = (): void => void request.destroy();
    const finish = (answer: HttpAnswer): void => {
      opts.signal?.removeEventListener('abort', onStop);
      resolve(answer);
    };
    const fail = (err: unknown): void => {
      if (timeout.aborted) finish({ network: 'timeout', latencyMs: elapsed(), detail: `no answer within ${opts.timeoutMs} ms` });
      else if (opts.signal?.aborted) finish({ network: 'timeout', latencyMs: elapsed(), detail: 'the probe was cancelled (keyplane is stopping)' });
      else finish({ network: networkReason(err), latencyMs: elapsed(), detail: networkDetail(err) });
    };
    const request = (secure ? https : http).request(
      url,
      {
        method: 'GET',
        headers: { accept: 'application/json', 'user-agent': 'keyplane-prober', ...req.headers },
        agent: opts.agents ? (secure ? opts.agents.https : opts.agents.http) : undefined,
        signal: timeout,
      },
      (res) => {
        const chunks: Buffer[] = [];
        // A 429's Retry-After says how long the key should cool; nothing else of the headers is kept.
        const retryAfter = typeof res.headers['retry-after'] === 'string' ? res.headers['retry-after'] : undefined;
        let size = 0;
        res.on('data', (chunk: Buffer) => {
          size += chunk.length;
          // A body above the cap is not parsed: the provider answered, which is what the probe asks.
          if (size > BODY_CAP) {
            finish({ status: res.statusCode ?? 0, latencyMs: elapsed(), body: undefined, retryAfter });
            res.destroy();
          } else chunks.push(chunk);
        });
        res.on('end', () => finish({ status: res.statusCode ?? 0, latencyMs: elapsed(), body: Buffer.concat(chunks).toString('utf8'), retryAfter }));
        res.on('error', fail);
      },
    );
    request.on('error', fail);
    opts.signal?.addEventListener('abort', onStop, { once: true });
    if (opts.signal?.aborted) onStop();
    request.end();
  });
}

const NET_WORDS: Record<string, string> = {
  ECONNREFUSED: 'connection refused',
  ECONNRESET: 'connection reset',
  ENOTFOUND: 'host name not found',
  EAI_AGAIN: 'host name lookup failed',
  EHOSTUNREACH: 'host unreachable',
  ENETUNREACH: 'network unreachable',
};

function errCode(err: unknown): string | undefined {
  const code = (err as { code?: unknown })?.code;
  return typeof code === 'string' ? code : undefined;
}

function networkReason(err: unknown): 'timeout' | 'unreachable' {
  return errCode(err) === 'ETIMEDOUT' ? 'timeout' : 'unreachable';
}

function networkDetail(err: unknown): string {
  const code = errCode(err);
  if (code) return NET_WORDS[code] ?? `network error (${code})`;
  // Without a code, only the error's class is safe to show: its message may name the URL.
  return `network error (${err instanceof Error ? err.name : 'unknown'})`;
}

export function parseJson(text: string | undefined): unknown {
  if (!text) return undefined;
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

export function field(doc: unknown, key: string): unknown {
  return doc && typeof doc === 'object' ? (doc as Record<string, unknown>)[key] : undefined;
}

/** A short identifier-like string from a provider's answer, or undefined: free text may echo a key. */
function safeToken(v: unknown): string | undefined {
  return typeof v === 'string' && /^[A-Za-z0-9_. :-]{1,64}$/.test(v) ? v : undefined;
}

/** Error codes from the OpenAI, Anthropic and Google error shapes. */
export function errorCodes(doc: unknown): string[] {
  const err = field(doc, 'error');
  const details = field(err, 'details');
  const raw = [field(err, 'code'), field(err, 'type'), field(err, 'status'), ...(Array.isArray(details) ? details.map((d) => field(d, 'reason')) : [])];
  return [...new Set(raw.map(safeToken).filter((v): v is string => v !== undefined))];
}
