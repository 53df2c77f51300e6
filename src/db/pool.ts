import pg from 'pg';

export type Pool = pg.Pool;
export type PoolClient = pg.PoolClient;

// Timestamps come back as Date objects; bigint counts as numbers (they stay far below 2^53 here).
pg.types.setTypeParser(20, (v) => Number(v));

export function createPool(connectionString: string, opts: { max?: number; applicationName?: string } = {}): Pool {
  const pool = new pg.Pool({
    connectionString,
    max: opts.max ?? 10,
    idleTimeoutMillis: 30_000,
    // Also bounds the wait for a free client: with the database gone, a request fails (503) within
    // this, and a host that drops packets does not hold it for the kernel's connect timeout.
    connectionTimeoutMillis: CONNECT_TIMEOUT_MS,
    // A peer that vanished without closing (host down, network cut) is found by TCP keepalive.
    keepAlive: true,
    application_name: opts.applicationName ?? 'keyplane',
  });
  // An idle client that loses its server emits here; without a listener it would crash the process.
  pool.on('error', () => undefined);
  // So does a checked-out one (pg-pool listens only while a client is idle): a server restart in the
  // middle of a request must fail that request, not the process. Its query rejects on its own.
  pool.on('connect', (client) => client.on('error', () => undefined));
  return pool;
}

export const CONNECT_TIMEOUT_MS = 1_500;

const RETRYABLE = new Set(['40001', '40P01', '57P03', '53300', '08006', '08003', '08000', '57P01']);
const RETRYABLE_NET = new Set(['ECONNRESET', 'ECONNREFUSED', 'EPIPE', 'ETIMEDOUT']);

/** Thrown inside a transaction to have it retried from the start (as a serialization failure would be). */
export class TransientConflict extends Error {
  readonly code = '40001';
}

/**
 * The connection broke after COMMIT was sent: the transaction may or may not have committed, so
 * it must not be run again (it would apply twice). The caller reports it; the client can look.
 */
export class CommitOutcomeUnknown extends Error {
  constructor(cause: unknown) {
    super(`the database connection broke while committing; the change may or may not have been applied (${(cause as Error).message})`);
    this.name = 'CommitOutcomeUnknown';
  }
}

/** Whether `err` is a broken connection (as opposed to an error the server reported). */
export function isConnectionError(err: unknown): boolean {
  const e = err as { code?: string; message?: string };
  if (!e || typeof e !== 'object') return false;
  if (e.code && (RETRYABLE_NET.has(e.code) || ['08006', '08003', '08000', '57P01'].includes(e.code))) return true;
  return /Connection terminated unexpectedly/.test(e.message ?? '');
}

// pg's own messages for a connection that could not be had or was lost (they carry no code).
const UNAVAILABLE_MESSAGE = /^(timeout exceeded when trying to connect|Connection terminated unexpectedly|Connection terminated due to connection timeout|Client has encountered a connection error and is not queryable)/;
const UNAVAILABLE_NET = new Set([...RETRYABLE_NET, 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN', 'ENOTFOUND']);
// 57P01 admin shutdown, 57P02 crash shutdown, 57P03 starting up or shutting down, 53300 too many connections.
const UNAVAILABLE_SQLSTATE = new Set(['57P01', '57P02', '57P03', '53300']);

/**
 * Whether `err` means the database cannot be reached right now (down, restarting, unreachable, or
 * no connection free in time), as opposed to a problem with the request: the API answers 503.
 */
export function isUnavailable(err: unknown): boolean {
  const e = err as { code?: unknown; message?: unknown };
  if (!e || typeof e !== 'object' || err instanceof CommitOutcomeUnknown) return false;
  if (typeof e.code === 'string' && (UNAVAILABLE_NET.has(e.code) || UNAVAILABLE_SQLSTATE.has(e.code) || /^08[0-9A-Z]{3}$/.test(e.code))) return true;
  return typeof e.message === 'string' && UNAVAILABLE_MESSAGE.test(e.message);
}

export function isRetryable(err: unknown): boolean {
  const e = err as { code?: string; message?: string };
  if (!e || typeof e !== 'object' || err instanceof CommitOutcomeUnknown) return false;
  if (e.code && (RETRYABLE.has(e.code) || RETRYABLE_NET.has(e.code))) return true;
  return /Connection terminated unexpectedly/.test(e.message ?? '');
}

export interface RetryOptions {
  attempts?: number;
  baseMs?: number;
}

/** The one place where Postgres errors worth a retry are retried, with jittered exponential backoff. */
export async function withRetry<T>(fn: () => Promise<T>, opts: RetryOptions = {}): Promise<T> {
  const attempts = opts.attempts ?? 5;
  const base = opts.baseMs ?? 10;
  for (let i = 1; ; i++) {
    try {
      return await fn();
    } catch (err) {
      if (i >= attempts || !isRetryable(err)) throw err;
      const delay = Math.random() * base * 2 ** i;
      await new Promise((r) => setTimeout(r, delay));
    }
  }
}

/** Runs `fn` in one transaction (retried as a whole when Postgres says so). */
export function withTransaction<T>(pool: Pool, fn: (client: PoolClient) => Promise<T>, opts: RetryOptions = {}): Promise<T> {
  return withBatchedTransaction(pool, undefined, (client) => fn(client), opts);
}

/** A parameterised statement, as node-postgres takes it. */
export interface Statement {
  text: string;
  values: unknown[];
}

/** A statement with its parameters written in as escaped literals, for a multi-statement round trip. */
export function inline(client: Pick<PoolClient, 'escapeLiteral'>, st: Statement): string {
  return st.text.replace(/\$(\d+)/g, (_, n: string) => {
    const v = st.values[Number(n) - 1];
    if (v === null || v === undefined) return 'NULL';
    if (typeof v === 'number') {
      if (!Number.isFinite(v)) throw new Error(`parameter $${n} is not a finite number`);
      return String(v);
    }
    if (typeof v === 'boolean') return v ? 'TRUE' : 'FALSE';
    if (v instanceof Date) return client.escapeLiteral(v.toISOString());
    if (typeof v === 'object') return client.escapeLiteral(JSON.stringify(v));
    return client.escapeLiteral(String(v));
  });
}

type Commit = (...statements: Statement[]) => Promise<pg.QueryResult[]>;

/**
 * Like withTransaction, with fewer round trips for hot paths: `begin` travels with BEGIN, and `fn`
 * may end the transaction by handing its last statements to `commit`, which sends them with
 * COMMIT in one message. Without that call the transaction is committed after `fn` returns.
 */
export function withBatchedTransaction<T>(
  pool: Pool,
  begin: Statement | undefined,
  fn: (client: PoolClient, first: pg.QueryResult | undefined, commit: Commit) => Promise<T>,
  opts: RetryOptions = {},
): Promise<T> {
  const scoped = SCOPES.get(pool);
  if (scoped) return withSavepoint(scoped, begin, fn);
  return withRetry(async () => {
    const client = await pool.connect();
    let committed = false;
    let commitSent = false;
    try {
      const opened = begin ? ((await client.query(`BEGIN; ${inline(client, begin)}`)) as unknown as pg.QueryResult[]) : [await client.query('BEGIN')];
      const commit: Commit = async (...statements) => {
        commitSent = true;
        const results = (await client.query([...statements.map((s) => inline(client, s)), 'COMMIT'].join(';\n'))) as unknown as pg.QueryResult[] | pg.QueryResult;
        committed = true;
        return Array.isArray(results) ? results.slice(0, statements.length) : [];
      };
      const result = await fn(client, opened[1], commit);
      if (!committed) {
        commitSent = true;
        await client.query('COMMIT');
      }
      return result;
    } catch (err) {
      await client.query('ROLLBACK').catch(() => undefined);
      if (commitSent && isConnectionError(err)) throw new CommitOutcomeUnknown(err);
      throw err;
    } finally {
      client.release();
    }
  }, opts);
}

/** Pools that stand for one client inside a transaction its caller opened (see scopedPool). */
const SCOPES = new WeakMap<object, PoolClient>();
let savepoints = 0;

/**
 * A Pool whose every query and connection is `client`, already inside a transaction its caller
 * opened: each withTransaction on it becomes a savepoint of that transaction (released when it
 * succeeds, rolled back to when it fails, never retried on its own; the caller's transaction is).
 * So several services' writes become one transaction (the import: everything or nothing). One
 * caller at a time: savepoints nest, they must not interleave.
 */
export function scopedPool(client: PoolClient): Pool {
  const borrowed = new Proxy(client, {
    get(target, prop) {
      if (prop === 'release') return () => undefined;
      const v: unknown = Reflect.get(target, prop, target);
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
  const scope = { query: client.query.bind(client), connect: async () => borrowed };
  SCOPES.set(scope, client);
  return scope as unknown as Pool;
}

async function withSavepoint<T>(
  client: PoolClient,
  begin: Statement | undefined,
  fn: (client: PoolClient, first: pg.QueryResult | undefined, commit: Commit) => Promise<T>,
): Promise<T> {
  const name = `kp_sp_${++savepoints}`;
  const opened = begin ? ((await client.query(`SAVEPOINT ${name}; ${inline(client, begin)}`)) as unknown as pg.QueryResult[]) : [await client.query(`SAVEPOINT ${name}`)];
  let released = false;
  const commit: Commit = async (...statements) => {
    const results = (await client.query([...statements.map((s) => inline(client, s)), `RELEASE SAVEPOINT ${name}`].join(';\n'))) as unknown as pg.QueryResult[] | pg.QueryResult;
    released = true;
    return Array.isArray(results) ? results.slice(0, statements.length) : [];
  };
  try {
    const result = await fn(client, opened[1], commit);
    if (!released) await client.query(`RELEASE SAVEPOINT ${name}`);
    return result;
  } catch (err) {
    if (!released) await client.query(`ROLLBACK TO SAVEPOINT ${name}; RELEASE SAVEPOINT ${name}`).catch(() => undefined);
    throw err;
  }
}
