import type { NextFunction, Request, Response } from 'express';
import { createRemoteJWKSet, errors as joseErrors, jwtVerify, type JWTPayload, type JWTVerifyGetKey, type JWTVerifyOptions } from 'jose';
import { constantTimeEqual } from '../crypto/keyring';
import type { TokensStore } from '../features/tokens/tokens-store';
import { Forbidden, ServiceUnavailable, TooManyRequests, Unauthorized, ValidationFailed } from './errors';
import { ROLES, roleAtLeast, type Principal, type Role } from './principal';

export interface AuthOptions {
  adminToken?: string;
  jwtSecret?: string;
  jwksUrl?: string;
  /** Required `iss` and `aud` of JWTs (both required with a JWKS URL, by the settings). */
  jwtIssuer?: string;
  jwtAudience?: string;
  tokens: TokensStore;
  maxFailures: number;
  windowMs?: number;
  /** How long a failed attempt over the limit is held before its 429 is sent. */
  tarpitMs?: number;
  now?: () => number;
  /** Waits `ms` (a seam for tests); a timer that does not hold the process open by default. */
  delay?: (ms: number) => Promise<void>;
}

/** How far in the future a JWT's `iat` may be (clock skew between the issuer and this host). */
export const IAT_SKEW_S = 60;
/** OpenID Connect caps `sub` at 255 ASCII characters; it becomes the audit trail's actor. */
const MAX_SUB_LENGTH = 255;
// A NUL, or a UTF-16 surrogate that is not half of a pair: Postgres cannot store either in text.
const UNSTORABLE = /\u0000|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

interface Entry {
  count: number;
  until: number;
  held: number;
}

export interface LimiterOptions {
  max: number;
  windowMs: number;
  tarpitMs: number;
  now: () => number;
  delay: (ms: number) => Promise<void>;
  /** Failed attempts of one address held in the tarpit at once; past it they are answered at once. */
  maxHeldPerAddr?: number;
  /** The same across all addresses, so that many addresses cannot hold unbounded responses. */
  maxHeld?: number;
  /** Addresses remembered at once; the oldest are forgotten first. */
  maxAddrs?: number;
}

/**
 * Counts failed authentications per client address in a fixed window. It never refuses a request
 * by itself: the credential is always checked, so a valid one gets through even from an address
 * that is failing (behind a proxy, everyone shares one). Past the limit, a failed attempt is held
 * for `tarpitMs` and then answered 429, which slows guessing to a trickle per address. At most
 * `maxHeldPerAddr` attempts of an address (and `maxHeld` overall) are held at once, so that the
 * memory the tarpit holds stays bounded; the rest get their 429 at once.
 */
export class FailureLimiter {
  private readonly byAddr = new Map<string, Entry>();
  private held = 0;
  private readonly maxHeldPerAddr: number;
  private readonly maxHeld: number;
  private readonly maxAddrs: number;

  constructor(private readonly opts: LimiterOptions) {
    this.maxHeldPerAddr = opts.maxHeldPerAddr ?? 4;
    this.maxHeld = opts.maxHeld ?? 1_000;
    this.maxAddrs = opts.maxAddrs ?? 10_000;
  }

  /**
   * Records a failure of `addr`. Under the limit: undefined (answer 401). Over it: the seconds until
   * the window ends (for Retry-After), after the tarpit delay.
   */
  async fail(addr: string): Promise<number | undefined> {
    const t = this.opts.now();
    let e = this.byAddr.get(addr);
    if (!e || t >= e.until) {
      e = { count: 0, until: t + this.opts.windowMs, held: 0 };
      this.byAddr.delete(addr);
      this.byAddr.set(addr, e);
      if (this.byAddr.size > this.maxAddrs) this.prune(t);
    }
    e.count++;
    if (e.count <= this.opts.max) return undefined;
    if (e.held < this.maxHeldPerAddr && this.held < this.maxHeld) {
      e.held++;
      this.held++;
      try {
        await this.opts.delay(this.opts.tarpitMs);
      } finally {
        e.held--;
        this.held--;
      }
    }
    return Math.max(1, Math.ceil((e.until - this.opts.now()) / 1000));
  }

  /** Addresses remembered now (for tests of the bound). */
  get size(): number {
    return this.byAddr.size;
  }

  private prune(t: number): void {
    for (const [k, v] of this.byAddr) if (t >= v.until) this.byAddr.delete(k);
    // Still too many live windows: forget the oldest (insertion order), whose windows end first.
    for (const k of this.byAddr.keys()) {
      if (this.byAddr.size <= this.maxAddrs) break;
      this.byAddr.delete(k);
    }
  }
}

const unrefDelay = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms).unref());

export class Authenticator {
  private readonly limiter: FailureLimiter;
  private readonly jwtKey?: Uint8Array | JWTVerifyGetKey;
  private readonly jwtOptions: JWTVerifyOptions;
  private readonly now: () => number;

  constructor(private readonly opts: AuthOptions) {
    this.now = opts.now ?? Date.now;
    this.limiter = new FailureLimiter({
      max: opts.maxFailures,
      windowMs: opts.windowMs ?? 60_000,
      tarpitMs: opts.tarpitMs ?? 1_000,
      now: this.now,
      delay: opts.delay ?? unrefDelay,
    });
    if (opts.jwtSecret) this.jwtKey = new TextEncoder().encode(opts.jwtSecret);
    else if (opts.jwksUrl) this.jwtKey = createRemoteJWKSet(new URL(opts.jwksUrl), { timeoutDuration: 5000, cooldownDuration: 30_000 });
    this.jwtOptions = {
      requiredClaims: ['exp'],
      ...(opts.jwtSecret ? { algorithms: ['HS256'] } : {}),
      ...(opts.jwtIssuer ? { issuer: opts.jwtIssuer } : {}),
      ...(opts.jwtAudience ? { audience: opts.jwtAudience } : {}),
    };
  }

  /**
   * Resolves the bearer credential to a principal, or throws 401; once an address (the client's,
   * through trusted proxies: `req.ip`) has failed too often, its failures are slowed and answered 429.
   */
  async authenticate(req: Request): Promise<Principal> {
    try {
      return await this.resolve(req.headers.authorization);
    } catch (err) {
      if (!(err instanceof Unauthorized)) throw err;
      const retryAfter = await this.limiter.fail(req.ip ?? req.socket.remoteAddress ?? 'unknown');
      throw retryAfter === undefined ? err : new TooManyRequests(retryAfter);
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
      ({ payload } = key instanceof Uint8Array ? await jwtVerify(token, key, this.jwtOptions) : await jwtVerify(token, key, this.jwtOptions));
    } catch (err) {
      throw jwtFailure(err, !(this.jwtKey instanceof Uint8Array));
    }
    // Checked only once the signature holds: what follows describes a token the issuer really made.
    if (typeof payload.iat === 'number' && payload.iat > this.now() / 1000 + IAT_SKEW_S) {
      throw new Unauthorized(`the JWT's iat claim is more than ${IAT_SKEW_S} s in the future`);
    }
    const bad = [claimProblem('sub', payload.sub), claimProblem('role', payload.role)].filter((e) => e !== undefined);
    if (bad.length) throw new ValidationFailed(bad.map((rule) => ({ field: 'Authorization', rule })));
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

/** A signed claim that cannot be stored (it would become the audit actor or the BYOK owner): the rule it breaks. */
function claimProblem(name: 'sub' | 'role', value: unknown): string | undefined {
  if (typeof value !== 'string') return undefined;
  if (UNSTORABLE.test(value)) return `the JWT's ${name} claim must not contain NUL or unpaired surrogate characters`;
  if (name === 'sub' && value.length > MAX_SUB_LENGTH) return `the JWT's sub claim must be at most ${MAX_SUB_LENGTH} characters`;
  return undefined;
}

/** Says which check a JWT failed (never a claim's value); an unreachable JWKS is our outage, not the caller's fault. */
function jwtFailure(err: unknown, remote: boolean): Error {
  if (err instanceof joseErrors.JWTExpired) return new Unauthorized('the JWT has expired');
  if (err instanceof joseErrors.JWTClaimValidationFailed) {
    return new Unauthorized(err.reason === 'missing' ? `the JWT has no ${err.claim} claim` : `the JWT's ${err.claim} claim is not accepted`);
  }
  if (remote && (err instanceof joseErrors.JWKSTimeout || err instanceof joseErrors.JWKSInvalid || !(err instanceof joseErrors.JOSEError))) {
    return new ServiceUnavailable('the JWKS that verifies JWTs could not be fetched; retry');
  }
  return new Unauthorized('the JWT is not valid (signature or algorithm)');
}
