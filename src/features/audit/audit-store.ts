import { createHash } from 'node:crypto';
import type { Pool, PoolClient, Statement } from '../../db/pool';

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

export const GENESIS = '0'.repeat(64);

/**
 * A string as Postgres stores it. Postgres refuses U+0000 in text and jsonb, and a lone UTF-16
 * surrogate reaches it as U+FFFD in text (UTF-8 has no form for it) and as an error in jsonb; both
 * become U+FFFD here, before the row is hashed, so the hash covers exactly what is stored.
 */
export function storableText(s: string): string {
  let out: string | undefined;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    let bad = c === 0;
    if (c >= 0xd800 && c <= 0xdfff) {
      const next = i + 1 < s.length ? s.charCodeAt(i + 1) : 0;
      if (c <= 0xdbff && next >= 0xdc00 && next <= 0xdfff) {
        if (out !== undefined) out += s.slice(i, i + 2);
        i++;
        continue;
      }
      bad = true;
    }
    if (bad && out === undefined) out = s.slice(0, i);
    if (out !== undefined) out += bad ? '\ufffd' : s[i];
  }
  return out ?? s;
}

/** `value` as jsonb stores it: every string, keys included, storable (see storableText), a Date as its JSON text. */
function storable(value: unknown): unknown {
  if (typeof value === 'string') return storableText(value);
  if (value instanceof Date) return value.toISOString();
  if (value === null || typeof value !== 'object') return value;
  if (Array.isArray(value)) return value.map(storable);
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value as Record<string, unknown>)) if (v !== undefined) out[storableText(k)] = storable(v);
  return out;
}

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

/** The digest of a row's content (everything but the links). */
export function contentDigest(r: Omit<AuditRow, 'id' | 'hash' | 'prev_hash'>): string {
  return createHash('sha256')
    .update(canonical([r.at.toISOString(), r.actor, r.action, r.target, r.version ?? null, r.request_id ?? null, r.details ?? {}]))
    .digest('hex');
}

/** A row's hash links it to the previous one: sha256(prev_hash || content digest), both as hex text. */
export function auditHash(prev: string, r: Omit<AuditRow, 'id' | 'hash' | 'prev_hash'>): string {
  return createHash('sha256').update(prev + contentDigest(r)).digest('hex');
}

/**
 * Writes one audit row inside the caller's transaction: the change and its record commit together
 * or not at all. One statement locks the chain's head row (FOR UPDATE returns the newest committed
 * head even after waiting), links the row to it and moves the head; the lock is held until commit,
 * so the chain stays linear. The link is computed in SQL with the same formula as auditHash().
 */
export async function appendAudit(client: PoolClient, e: AuditEntry): Promise<void> {
  await client.query(auditStatement(e));
}

/** An audit row as written: its fields, and the digest of its content (see contentDigest). */
export type AuditRowInput = Omit<AuditRow, 'id' | 'prev_hash' | 'hash'> & { digest: string };

/** The row to store and its digest, both taken from the same storable values (see storableText). */
export function auditRow(e: AuditEntry): AuditRowInput {
  const row = {
    at: new Date(),
    actor: storableText(e.actor),
    action: storableText(e.action),
    target: storableText(e.target),
    version: e.version ?? null,
    request_id: e.requestId == null ? null : storableText(e.requestId),
    details: (storable(e.details ?? {}) ?? {}) as Record<string, unknown>,
  };
  return { ...row, digest: contentDigest(row) };
}

/** The statement appendAudit runs, for callers that batch it with others (see withBatchedTransaction). */
export function auditStatement(e: AuditEntry): Statement {
  const row = auditRow(e);
  return {
    text: `WITH head AS (SELECT hash FROM audit_head WHERE id = 1 FOR UPDATE),
      appended AS (
        INSERT INTO audit_log (at, actor, action, target, version, request_id, details, prev_hash, hash)
        SELECT $1::timestamptz, $2, $3, $4, $5::int, $6, $7::jsonb, head.hash,
               encode(sha256(convert_to(head.hash || $8::text, 'UTF8')), 'hex') FROM head
        RETURNING hash)
      UPDATE audit_head SET hash = a.hash FROM appended a WHERE audit_head.id = 1`,
    values: [row.at, row.actor, row.action, row.target, row.version, row.request_id, row.details, row.digest],
  };
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
      const head = await client.query<{ hash: string }>('SELECT hash FROM audit_head WHERE id = 1');
      if (head.rows[0]?.hash !== prev) return { ok: false, checked, problem: 'the chain head does not match the newest row (rows were removed from the end)' };
      return { ok: true, checked };
    } finally {
      await client.query('ROLLBACK').catch(() => undefined);
      client.release();
    }
  }
}
