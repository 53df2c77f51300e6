import type { NextFunction, Request, Response } from 'express';
import { createRemoteJWKSet, jwtVerify, type JWTPayload, type JWTVerifyGetKey } from 'jose';
import { constantTimeEqual } from '../crypto/keyring';
import type { TokensStore } from '../features/tokens/tokens-store';
import { Forbidden, TooManyRequests, Unauthorized } from './errors';
import { ROLES, roleAtLeast, type Principal, type Role } from './principal';

export interface AuthOptions {
  adminToken?: string;
  jwtSecret?: string;
  jwksUrl?: string;
  tokens: TokensStore;
  maxFailures: number;
  windowMs?: number;
  now?: () => number;
}

/**
 * Counts failed authentications per client address in a fixed window; past the limit every request
 * from that address gets 429 until the window ends, which makes guessing tokens slow.
 */
export class FailureLimiter {
  private readonly byAddr = new Map<string, { count: number; until: number }>();

  constructor(private readonly max: number, private readonly windowMs: number, private readonly now: () => number) {}

  retryAfter(addr: string): number {
    const e = this.byAddr.get(addr);
    if (!e) return 0;
    const t = this.now();
    if (t >= e.until) {
      this.byAddr.delete(addr);
      return 0;
    }
    return e.count >= this.max ? Math.ceil((e.until - t) / 1000) : 0;
  }

  fail(addr: string): void {
    const t = this.now();
    const e = this.byAddr.get(addr);
    if (!e || t >= e.until) this.byAddr.set(addr, { count: 1, until: t + this.windowMs });
    else e.count++;
    if (this.byAddr.size > 10_000) this.prune(t);
  }

  private prune(t: number): void {
    for (const [k, v] of this.byAddr) if (t >= v.until) this.byAddr.delete(k);
  }
}

export class Authenticator {
  private readonly limiter: FailureLimiter;
  private readonly jwtKey?: Uint8Array | JWTVerifyGetKey;

  constructor(private readonly opts: AuthOptions) {
    this.limiter = new FailureLimiter(opts.maxFailures, opts.windowMs ?? 60_000, opts.now ?? Date.now);
    if (opts.jwtSecret) this.jwtKey = new TextEncoder().encode(opts.jwtSecret);
    else if (opts.jwksUrl) this.jwtKey = createRemoteJWKSet(new URL(opts.jwksUrl), { timeoutDuration: 5000, cooldownDuration: 30_000 });
  }

  /** Resolves the bearer credential to a principal, or throws 401 (429 once an address has failed too often). */
  async authenticate(req: Request): Promise<Principal> {
    const addr = req.socket.remoteAddress ?? 'unknown';
    const wait = this.limiter.retryAfter(addr);
    if (wait > 0) throw new TooManyRequests(wait);
    try {
      return await this.resolve(req.headers.authorization);
    } catch (err) {
      if (err instanceof Unauthorized) this.limiter.fail(addr);
      throw err;
    }
  }

  private async resolve(header: string | undefined): Promise<Principal> {
    const m = /^Bearer\s+(\S+)\s*$/i.exec(header ?? '');
    if (!m) throw new Unauthorized('missing Authorization: Bearer <token>');
    const token = m[1]!;
    if (this.opts.adminToken && constantTimeEqual(token, this.opts.adminToken)) {
      return { actor: 'bootstrap', user: 'bootstrap', role: 'admin', via: 'bootstrap' };
    }
    if (token.split('.').length === 3 && this.jwtKey) return this.fromJwt(token);
    const row = await this.opts.tokens.findActive(token);
    if (!row) throw new Unauthorized('the bearer token is not valid');
    // Token names need not be unique; the BYOK owner is the token itself.
    return { actor: `token:${row.name}`, user: `token:${row.id}`, role: row.role, via: 'token' };
  }

  private async fromJwt(token: string): Promise<Principal> {
    let payload: JWTPayload;
    try {
      const key = this.jwtKey!;
      ({ payload } =
        key instanceof Uint8Array ? await jwtVerify(token, key, { algorithms: ['HS256'] }) : await jwtVerify(token, key));
    } catch {
      throw new Unauthorized('the JWT is not valid (signature, expiry or algorithm)');
    }
    const role = payload.role;
    if (typeof payload.sub !== 'string' || !payload.sub) throw new Unauthorized('the JWT has no sub claim');
    if (typeof role !== 'string' || !(ROLES as string[]).includes(role)) throw new Unauthorized('the JWT has no role claim of admin, operator or viewer');
    return { actor: `jwt:${payload.sub}`, user: `jwt:${payload.sub}`, role: role as Role, via: 'jwt' };
  }

  /** Express middleware: authenticates, then checks the role (`any` lets every authenticated principal in). */
  require(need: Role | 'any') {
    return async (req: Request, res: Response, next: NextFunction): Promise<void> => {
      const principal = await this.authenticate(req);
      res.locals.principal = principal;
      if (need !== 'any' && !roleAtLeast(principal.role, need)) {
        throw new Forbidden(`this needs the ${need} role; the caller has ${principal.role}`);
      }
      next();
    };
  }
}
