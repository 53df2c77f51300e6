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
    connectionTimeoutMillis: 5_000,
    application_name: opts.applicationName ?? 'keyplane',
  });
  // An idle client that loses its server emits here; without a listener it would crash the process.
  pool.on('error', () => undefined);
  return pool;
}

const RETRYABLE = new Set(['40001', '40P01', '57P03', '53300', '08006', '08003', '08000', '57P01']);
const RETRYABLE_NET = new Set(['ECONNRESET', 'ECONNREFUSED', 'EPIPE', 'ETIMEDOUT']);

/** Thrown inside a transaction to have it retried from the start (as a serialization failure would be). */
export class TransientConflict extends Error {
  readonly code = '40001';
}

export function isRetryable(err: unknown): boolean {
  const e = err as { code?: string; message?: string };
  if (!e || typeof e !== 'object') return false;
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
  return withRetry(async () => {
    const client = await pool.connect();
    try {
      await client.query('BEGIN');
      const result = await fn(client);
      await client.query('COMMIT');
      return result;
    } catch (err) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw err;
    } finally {
      client.release();
    }
  }, opts);
}
