import type { Request, RequestHandler, Response, Router } from 'express';
import { z } from 'zod';
import type { Role } from './principal';
import type { RequestContext } from './principal';
import type { Authenticator } from './auth';

export type Method = 'get' | 'post' | 'put' | 'patch' | 'delete';
export type Access = Role | 'any' | 'public';

export interface RouteSpec {
  method: Method;
  path: string;
  access: Access;
  summary: string;
  tag: string;
  body?: z.ZodType;
  responses?: Record<number, string>;
  handler: (req: Request, res: Response, ctx: RequestContext) => Promise<unknown> | unknown;
}

/**
 * Every admin route is declared here once, with its access level and body schema; the same table
 * mounts the routes and writes the OpenAPI document, so the two cannot drift.
 */
export class RouteTable {
  readonly routes: RouteSpec[] = [];
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

  add(spec: RouteSpec): void {
    this.routes.push(spec);
  }

  mount(router: Router, auth: Authenticator): void {
    for (const r of this.routes) {
      const handlers: RequestHandler[] = [];
      if (r.access !== 'public') handlers.push(auth.require(r.access) as RequestHandler);
      handlers.push(async (req, res) => {
        const ctx: RequestContext = { principal: res.locals.principal, requestId: String(res.locals.requestId) };
        this.inflight++;
        try {
          const out = await r.handler(req, res, ctx);
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
      const params = [...r.path.matchAll(/:([A-Za-z_]+)/g)].map((m) => ({ name: m[1], in: 'path', required: true, schema: { type: 'string' } }));
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
