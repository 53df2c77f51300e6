import { JsonClient, NetworkError } from './soak-http';

/** One PUT as a client saw it. Times are performance.now() of the soak process. */
export interface PutRecord {
  client: number;
  key: string;
  /** The value's last four characters, unique in the run: the versions list shows them masked. */
  tag: string;
  value: string;
  ifMatch?: number;
  startedAt: number;
  endedAt: number;
  /** HTTP status, or 0 for a network error. */
  status: number;
  /** The problem type's last segment (`unavailable`, `commit-outcome-unknown`, ...) of an error answer. */
  problem?: string;
  /** The network error's code, when status is 0. */
  code?: string;
  version?: number;
  fingerprint?: string;
}

export const keyPath = (key: string): string => `/api/v1/admin/platform-keys/${key}`;

const TAG_CHARS = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';

/**
 * Distinctive key values: `sk-soak-<run>-<key>-<client>-<tag>`, where the four-character tag is
 * unique in the run and ends the value, so the masked `****<tag>` of any stored version names the
 * one request that sent it (compared without reading any secret back).
 */
export class ValueMaker {
  private n = 0;
  constructor(readonly prefix: string) {}

  next(key: string, client: number): { tag: string; value: string } {
    let i = this.n++;
    if (i >= TAG_CHARS.length ** 4) throw new Error('out of unique tags');
    let tag = '';
    for (let d = 0; d < 4; d++) {
      tag = TAG_CHARS[i % TAG_CHARS.length] + tag;
      i = Math.floor(i / TAG_CHARS.length);
    }
    return { tag, value: `${this.prefix}-${key}-${client}-${tag}` };
  }
}

export function recordOf(base: Omit<PutRecord, 'status' | 'endedAt'>, outcome: { status: number; body: unknown } | NetworkError, endedAt: number): PutRecord {
  if (outcome instanceof NetworkError) return { ...base, endedAt, status: 0, code: outcome.code };
  const body = (outcome.body ?? {}) as { type?: unknown; version?: unknown; fingerprint?: unknown };
  const rec: PutRecord = { ...base, endedAt, status: outcome.status };
  if (outcome.status === 200) {
    if (typeof body.version === 'number') rec.version = body.version;
    if (typeof body.fingerprint === 'string') rec.fingerprint = body.fingerprint;
  } else if (typeof body.type === 'string') {
    rec.problem = body.type.slice(body.type.lastIndexOf('/') + 1);
  }
  return rec;
}

export interface LoadOptions {
  base: string;
  token: string;
  clients: number;
  keys: string[];
  values: ValueMaker;
  /** Probability that a PUT carries If-Match with the version its client last saw for the key. */
  ifMatchRate: number;
  /** The version every key starts at (written before the load). */
  startVersion: number;
}

/**
 * `clients` loops, each on its own keep-alive connection: pick a key at random, PUT a new value,
 * with If-Match (maybe stale: 412 expected) about half the time. After a 503 or a network error a
 * client pauses 20-80 ms (Retry-After would blur the recovery time being measured). Runs until
 * `stop()`; `done` resolves once every loop has finished its request in flight.
 */
export function startLoad(o: LoadOptions): { records: PutRecord[]; stop: () => void; done: Promise<void> } {
  const records: PutRecord[] = [];
  let stopped = false;
  const loop = async (client: number): Promise<void> => {
    const http = new JsonClient(o.base, o.token);
    const seen = new Map(o.keys.map((k) => [k, o.startVersion]));
    try {
      while (!stopped) {
        const key = o.keys[Math.floor(Math.random() * o.keys.length)]!;
        const { tag, value } = o.values.next(key, client);
        const ifMatch = Math.random() < o.ifMatchRate ? seen.get(key)! : undefined;
        const startedAt = performance.now();
        const base = { client, key, tag, value, startedAt, ...(ifMatch !== undefined ? { ifMatch } : {}) };
        let rec: PutRecord;
        try {
          const res = await http.request('PUT', keyPath(key), { body: { api_key: value }, headers: ifMatch !== undefined ? { 'if-match': `"${ifMatch}"` } : {} });
          rec = recordOf(base, res, performance.now());
          const current = (res.body as { current_version?: unknown } | undefined)?.current_version;
          if (rec.version !== undefined) seen.set(key, rec.version);
          else if (res.status === 412 && typeof current === 'number') seen.set(key, current);
        } catch (err) {
          if (!(err instanceof NetworkError)) throw err;
          rec = recordOf(base, err, performance.now());
        }
        records.push(rec);
        if (rec.status === 503 || rec.status === 0) await new Promise((r) => setTimeout(r, 20 + Math.random() * 60));
      }
    } finally {
      http.close();
    }
  };
  const done = Promise.all(Array.from({ length: o.clients }, (_, i) => loop(i))).then(() => undefined);
  return { records, stop: () => void (stopped = true), done };
}
