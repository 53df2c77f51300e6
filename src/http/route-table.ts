import type { Request, RequestHandler, Response, Router } from 'express';
import { z } from 'zod';
import type { Role } from './principal';
import type { RequestContext } from './principal';
import type { Authenticator } from './auth';
import { parse } from './validate';

export type Method = 'get' | 'post' | 'put' | 'patch' | 'delete';
export type Access = Role | 'any' | 'public';

export interface RouteSpec<Q = Record<string, never>> {
  method: Method;
  path: string;
  access: Access;
  summary: string;
  tag: string;
  body?: z.ZodType;
  /**
   * The query string's parameters (a z.strictObject). Validated before the handler runs, which
   * gets the result; a route without one takes no parameters at all.
   */
  query?: z.ZodType<Q>;
  responses?: Record<number, string>;
  // Method syntax (bivariant): the table holds routes of every query type; add() ties each handler to its own schema.
  handler(req: Request, res: Response, ctx: RequestContext, query: Q): Promise<unknown> | unknown;
}

const NO_QUERY = z.strictObject({});

/**
 * Every admin route is declared here once, with its access level and body schema; the same table
 * mounts the routes and writes the OpenAPI document, so the two cannot drift.
 */
export class RouteTable {
  readonly routes: Array<RouteSpec<unknown>> = [];
  /** Handlers still running: shutdown waits for them, even those whose client has gone away. */
  private inflight = 0;
  private drained: Array<() => void> = [];

  /** Resolves once no handler runs (or after `timeoutMs`). */
  drain(timeoutMs = 10_000): Promise<void> {
    if (this.inflight === 0) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, timeoutMs);
      timer.unref();
      this.drained.push(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  add<Q = Record<string, never>>(spec: RouteSpec<Q>): void {
    this.routes.push(spec as RouteSpec<unknown>);
  }

  mount(router: Router, auth: Authenticator): void {
    for (const r of this.routes) {
      const handlers: RequestHandler[] = [];
      if (r.access !== 'public') handlers.push(auth.require(r.access) as RequestHandler);
      handlers.push(async (req, res) => {
        const ctx: RequestContext = { principal: res.locals.principal, requestId: String(res.locals.requestId) };
        const query = parse(r.query ?? NO_QUERY, { ...req.query }, 'query');
        this.inflight++;
        try {
          const out = await r.handler(req, res, ctx, query);
          if (!res.headersSent && out !== undefined) res.json(out);
          else if (!res.headersSent) res.status(204).end();
        } finally {
          if (--this.inflight === 0) for (const f of this.drained.splice(0)) f();
        }
      });
      router[r.method](r.path, ...handlers);
    }
  }

  openapi(info: { title: string; version: string }): Record<string, unknown> {
    const paths: Record<string, Record<string, unknown>> = {};
    for (const r of this.routes) {
      const oaPath = r.path.replace(/:([A-Za-z_]+)/g, '{$1}');
      const params: Array<Record<string, unknown>> = [...r.path.matchAll(/:([A-Za-z_]+)/g)].map((m) => ({ name: m[1], in: 'path', required: true, schema: { type: 'string' } }));
      if (r.query) {
        const schema = z.toJSONSchema(r.query, { unrepresentable: 'any', io: 'input' }) as { properties?: Record<string, unknown>; required?: string[] };
        for (const [name, s] of Object.entries(schema.properties ?? {})) params.push({ name, in: 'query', required: schema.required?.includes(name) ?? false, schema: s });
      }
      const op: Record<string, unknown> = {
        summary: r.summary,
        tags: [r.tag],
        'x-access': r.access,
        parameters: params,
        responses: Object.fromEntries(
          Object.entries({ 200: 'OK', ...(r.responses ?? {}), ...(r.access !== 'public' ? { 401: 'Unauthorized', 403: 'Forbidden' } : {}) }).map(
            ([code, description]) => [code, { description }],
          ),
        ),
      };
      if (r.access !== 'public') op.security = [{ bearer: [] }];
      if (r.body) op.requestBody = { required: true, content: { 'application/json': { schema: z.toJSONSchema(r.body, { unrepresentable: 'any' }) } } };
      (paths[oaPath] ??= {})[r.method] = op;
    }
    return {
      openapi: '3.1.0',
      info,
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
      paths,
    };
  }
}
