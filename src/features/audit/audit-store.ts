import { createHash } from 'node:crypto';
import type { Pool, PoolClient } from '../../db/pool';

export interface AuditEntry {
  actor: string;
  action: string;
  target: string;
  version?: number | null;
  requestId?: string | null;
  /** Never a secret: names, versions, fingerprints at most. */
  details?: Record<string, unknown>;
}

export interface AuditRow {
  id: number;
  at: Date;
  actor: string;
  action: string;
  target: string;
  version: number | null;
  request_id: string | null;
  details: Record<string, unknown>;
  prev_hash: string;
  hash: string;
}

// Appends are serialised by this transaction-scoped advisory lock so that the chain never forks.
const AUDIT_LOCK = 0x6b70_0002;
export const GENESIS = '0'.repeat(64);

function canonical(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value ?? null);
  if (Array.isArray(value)) return `[${value.map(canonical).join(',')}]`;
  const obj = value as Record<string, unknown>;
  return `{${Object.keys(obj)
    .filter((k) => obj[k] !== undefined)
    .sort()
    .map((k) => `${JSON.stringify(k)}:${canonical(obj[k])}`)
    .join(',')}}`;
}

export function auditHash(prev: string, r: Omit<AuditRow, 'id' | 'hash' | 'prev_hash'>): string {
  return createHash('sha256')
    .update(prev)
    .update(canonical([r.at.toISOString(), r.actor, r.action, r.target, r.version ?? null, r.request_id ?? null, r.details ?? {}]))
    .digest('hex');
}

/** Writes one audit row inside the caller's transaction: the change and its record commit together or not at all. */
export async function appendAudit(client: PoolClient, e: AuditEntry): Promise<void> {
  await client.query('SELECT pg_advisory_xact_lock($1)', [AUDIT_LOCK]);
  const last = await client.query<{ hash: string }>('SELECT hash FROM audit_log ORDER BY id DESC LIMIT 1');
  const prev = last.rows[0]?.hash ?? GENESIS;
  const row = { at: new Date(), actor: e.actor, action: e.action, target: e.target, version: e.version ?? null, request_id: e.requestId ?? null, details: e.details ?? {} };
  const hash = auditHash(prev, row);
  await client.query(
    'INSERT INTO audit_log (at, actor, action, target, version, request_id, details, prev_hash, hash) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9)',
    [row.at, row.actor, row.action, row.target, row.version, row.request_id, row.details, prev, hash],
  );
}

export interface AuditQuery {
  limit: number;
  beforeId?: number;
  target?: string;
  action?: string;
}

export class AuditStore {
  constructor(private readonly pool: Pool) {}

  async list(q: AuditQuery): Promise<AuditRow[]> {
    const where: string[] = [];
    const args: unknown[] = [];
    if (q.beforeId) where.push(`id < $${args.push(q.beforeId)}`);
    if (q.target) where.push(`target = $${args.push(q.target)}`);
    if (q.action) where.push(`action = $${args.push(q.action)}`);
    const sql = `SELECT * FROM audit_log ${where.length ? 'WHERE ' + where.join(' AND ') : ''} ORDER BY id DESC LIMIT $${args.push(q.limit)}`;
    return (await this.pool.query<AuditRow>(sql, args)).rows;
  }

  /** Walks the whole chain in order; the first row whose links or hash do not hold is reported. */
  async verify(): Promise<{ ok: boolean; checked: number; first_bad_id?: number; problem?: string }> {
    const client = await this.pool.connect();
    try {
      await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
      let prev = GENESIS;
      let checked = 0;
      let lastId = 0;
      for (;;) {
        const { rows } = await client.query<AuditRow>('SELECT * FROM audit_log WHERE id > $1 ORDER BY id LIMIT 5000', [lastId]);
        if (rows.length === 0) break;
        for (const r of rows) {
          if (r.prev_hash !== prev) return { ok: false, checked, first_bad_id: r.id, problem: 'prev_hash does not match the previous row' };
          if (auditHash(prev, r) !== r.hash) return { ok: false, checked, first_bad_id: r.id, problem: 'row content does not match its hash' };
          prev = r.hash;
          lastId = r.id;
          checked++;
        }
      }
      return { ok: true, checked };
    } finally {
      await client.query('ROLLBACK').catch(() => undefined);
      client.release();
    }
  }
}
