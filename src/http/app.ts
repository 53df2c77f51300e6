import { randomUUID } from 'node:crypto';
import express, { type ErrorRequestHandler, type Express, type RequestHandler } from 'express';
import helmet from 'helmet';
import type { Logger } from '../log';
import type { Metrics } from '../metrics';
import { CommitOutcomeUnknown, isUnavailable, type Pool } from '../db/pool';
import { AppError, NotFound } from './errors';
import type { Authenticator } from './auth';
import type { RouteTable } from './route-table';
import { inputGuard } from './input-guard';
import { uiStatic } from './ui-static';

export interface AppDeps {
  log: Logger;
  metrics: Metrics;
  pool: Pool;
  auth: Authenticator;
  routes: RouteTable;
  version: string;
  /** KEYPLANE_TRUSTED_PROXIES: peers whose X-Forwarded-For names the client (`req.ip`); none by default. */
  trustedProxies?: string[];
  /** The built dashboard (dist/ui), served at /ui/; none: no dashboard. */
  uiDir?: string;
}

const JSON_LIMIT = 64 * 1024;
const REQUEST_ID = /^[A-Za-z0-9._-]{1,128}$/;
const UNAVAILABLE_RETRY_AFTER_S = 2;

function problem(res: express.Response, status: number, type: string, title: string, detail: string, extra: Record<string, unknown> = {}): void {
  res
    .status(status)
    .type('application/problem+json')
    .send(JSON.stringify({ type: `https://keyplane.dev/problems/${type}`, title, status, detail, ...extra, request_id: res.locals.requestId }));
}

const HELMET: Parameters<typeof helmet>[0] = {
  contentSecurityPolicy: { useDefaults: false, directives: { defaultSrc: ["'none'"], frameAncestors: ["'none'"] } },
  frameguard: { action: 'deny' },
};

/** The headers helmet sets, for answers written below Express (a request Node cannot parse). */
export function securityHeaders(): Record<string, string> {
  const headers: Record<string, string> = {};
  const res = { setHeader: (k: string, v: string) => (headers[k.toLowerCase()] = String(v)), removeHeader: () => undefined };
  helmet(HELMET)({ headers: {} } as never, res as never, () => undefined);
  return headers;
}

/**
 * A request Node's parser refuses (bad request line, headers too large) never reaches Express: it
 * gets a problem+json answer with the same security headers, then the connection is closed.
 */
export function answerClientError(err: Error & { code?: string }, socket: import('node:stream').Duplex, headers = securityHeaders()): void {
  if (!socket.writable || err.code === 'ECONNRESET') {
    socket.destroy();
    return;
  }
  const tooLarge = err.code === 'HPE_HEADER_OVERFLOW';
  const status = tooLarge ? 431 : 400;
  const body = JSON.stringify({
    type: `https://keyplane.dev/problems/${tooLarge ? 'headers-too-large' : 'malformed-request'}`,
    title: tooLarge ? 'Request header fields too large' : 'Malformed request',
    status,
    detail: tooLarge ? 'the request headers are too large' : 'the request could not be parsed as HTTP',
  });
  const lines = [
    `HTTP/1.1 ${status} ${tooLarge ? 'Request Header Fields Too Large' : 'Bad Request'}`,
    'Content-Type: application/problem+json',
    `Content-Length: ${Buffer.byteLength(body)}`,
    'Connection: close',
    ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`),
  ];
  socket.end(`${lines.join('\r\n')}\r\n\r\n${body}`);
}

export function createApp(deps: AppDeps): Express {
  const { log, metrics, pool, auth, routes } = deps;
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);
  app.set('trust proxy', deps.trustedProxies?.length ? deps.trustedProxies : false);
  // Security headers on every response, errors and /metrics included. A JSON API loads nothing
  // and is framed by nobody.
  app.use(helmet(HELMET));

  app.use(((req, res, next) => {
    const given = req.get('x-request-id');
    res.locals.requestId = given && REQUEST_ID.test(given) ? given : randomUUID();
    res.setHeader('X-Request-Id', res.locals.requestId);
    const start = process.hrtime.bigint();
    res.on('finish', () => {
      // Only matched routes are labelled by their pattern: anything else, whatever its status, is
      // one label, so that requests to made-up paths cannot grow /metrics.
      const route = req.route?.path ? `${req.baseUrl}${req.route.path}` : 'unmatched';
      const labels = { method: req.method, route, status: String(res.statusCode) };
      metrics.httpRequests.inc(labels);
      metrics.httpDuration.observe(labels, Number(process.hrtime.bigint() - start) / 1e9);
    });
    next();
  }) as RequestHandler);

  // Bodies: JSON only, at most 64 KiB. A request with a body of another type is a 415.
  app.use(((req, res, next) => {
    const hasBody = Number(req.get('content-length') ?? 0) > 0 || req.get('transfer-encoding') !== undefined;
    if (hasBody && !req.is('application/json') && !req.is('application/*+json')) {
      return problem(res, 415, 'unsupported-media-type', 'Unsupported media type', 'request bodies must be application/json');
    }
    next();
  }) as RequestHandler);
  app.use(express.json({ limit: JSON_LIMIT, type: ['application/json', 'application/*+json'], strict: false }));
  app.use(inputGuard());

  app.get('/healthz', (_req, res) => {
    res.json({ status: 'ok', version: deps.version });
  });
  app.get('/readyz', async (_req, res) => {
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([pool.query('SELECT 1'), new Promise((_, rej) => (timer = setTimeout(() => rej(new Error('timeout')), 2000)))]);
      res.json({ status: 'ready', database: 'ok' });
    } catch {
      problem(res, 503, 'not-ready', 'Not ready', 'the database is unreachable', { database: 'unreachable' });
    } finally {
      clearTimeout(timer);
    }
  });
  app.get('/metrics', async (_req, res) => {
    res.type(metrics.registry.contentType).send(await metrics.registry.metrics());
  });
  app.get('/api/v1/openapi.json', (_req, res) => {
    res.json(routes.openapi({ title: 'keyplane admin API', version: deps.version }));
  });

  if (deps.uiDir) app.use('/ui', uiStatic(deps.uiDir));

  const router = express.Router();
  routes.mount(router, auth);
  app.use(router);

  app.use(((req, _res, next) => next(new NotFound(`route ${req.method} ${req.path}`))) as RequestHandler);

  const onError: ErrorRequestHandler = (err, req, res, _next) => {
    if (res.headersSent) return;
    if (err instanceof AppError) {
      if (err.status === 429 && 'retryAfterSeconds' in err) res.setHeader('Retry-After', String(err.retryAfterSeconds));
      if (err.status >= 500) log.error('request failed', { err, method: req.method, path: req.path, request_id: res.locals.requestId });
      return problem(res, err.status, err.type, err.title, err.message, err.extra);
    }
    const e = err as { type?: string; status?: number; message?: string; code?: string; constraint?: string };
    if (e instanceof CommitOutcomeUnknown) {
      log.error('commit outcome unknown', { err, method: req.method, path: req.path, request_id: res.locals.requestId });
      return problem(res, 503, 'commit-outcome-unknown', 'Commit outcome unknown', `${e.message}; read the resource before trying again`);
    }
    // The database is down or restarting: say so at once, and when to try again, instead of a 500.
    if (isUnavailable(e)) {
      log.warn('database unavailable', { err, method: req.method, path: req.path, request_id: res.locals.requestId });
      res.setHeader('Retry-After', String(UNAVAILABLE_RETRY_AFTER_S));
      return problem(res, 503, 'unavailable', 'Service unavailable', 'the database is unreachable; retry shortly');
    }
    // A unique or foreign-key race that slipped past the service's own checks is still a conflict, not a crash.
    if (e.code === '23505' || e.code === '23503') {
      return problem(res, 409, 'conflict', 'Conflict', `the change conflicts with another row (${e.constraint ?? 'constraint'}); retry`);
    }
    // A bound on the stored data as a whole (sql/006_input_limits.sql): the message names the limit.
    if (e.code === 'KPLIM') return problem(res, 409, 'limit-exceeded', 'Limit exceeded', e.message ?? 'a storage limit was reached');
    if (e.type === 'entity.too.large') return problem(res, 413, 'payload-too-large', 'Payload too large', `request bodies are limited to ${JSON_LIMIT} bytes`);
    if (e.type === 'entity.parse.failed') {
      return problem(res, 400, 'malformed-json', 'Malformed JSON', 'the request body is not valid JSON', { errors: [{ field: '(body)', rule: 'must be valid JSON' }] });
    }
    if (e.type === 'encoding.unsupported' || e.type === 'charset.unsupported') return problem(res, 415, 'unsupported-media-type', 'Unsupported media type', 'request bodies must be UTF-8 JSON');
    if (typeof e.status === 'number' && e.status >= 400 && e.status < 500) {
      // A path that is not valid percent-encoded UTF-8 fails while the router decodes it.
      const field = err instanceof URIError ? '(path)' : '(request)';
      return problem(res, e.status, 'bad-request', 'Bad request', 'the request could not be read', { errors: [{ field, rule: field === '(path)' ? 'must be valid percent-encoded UTF-8' : 'could not be read' }] });
    }
    log.error('request failed', { err, method: req.method, path: req.path, request_id: res.locals.requestId });
    return problem(res, 500, 'internal', 'Internal error', 'an unexpected error occurred; see the server log for request ' + String(res.locals.requestId));
  };
  app.use(onError);
  return app;
}
