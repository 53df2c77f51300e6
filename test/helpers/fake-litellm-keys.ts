import { createHash, randomBytes } from 'node:crypto';
import { DB_NOT_CONNECTED, isObject, proxyError, pyDict, Reply, validationError } from './litellm-replies';

/**
 * LiteLLM's virtual key endpoints for the fake (key_management_endpoints.py in LiteLLM 1.81), with
 * the answers and quirks of the real ones:
 * - `/key/generate` makes `sk-` + 22 url-safe characters, stores only its sha256 (`token`) and
 *   `key_name` (`sk-...` + last 4), and answers the key once, with `token` and `token_id` the hash.
 *   A `key_alias` another key holds is refused (400, `_enforce_unique_key_alias`).
 * - `/key/update`, `/key/delete`, `/key/info` take the key or its hash. `/key/update` on an unknown
 *   key answers 404 "Team not found, passed team_id=None" (LiteLLM's own message); a
 *   `budget_duration` of null is ignored; `duration` null or "-1" means never expires.
 * - `/key/delete` answers 404 "No keys found" when none exists, else deletes those that do.
 * - Without a database each answers its own message: generate 500 "DB not connected", update
 *   400 "Not connected to DB!", delete 500 "Not connected to DB!", info 500 and list 500
 *   "Database not connected".
 * - `upperboundMaxBudget` is `litellm_settings.upperbound_key_generate_params.max_budget`: a larger
 *   max_budget is refused with 400.
 * HTTPException details that are dicts reach the client as Python's str() of the dict.
 */

export interface FakeVirtualKey {
  token: string;
  key_alias: string | null;
  key_name: string;
  models: string[];
  max_budget: number | null;
  budget_duration: string | null;
  budget_reset_at: string | null;
  rpm_limit: number | null;
  tpm_limit: number | null;
  expires: string | null;
  metadata: Record<string, unknown>;
  spend: number;
  blocked: boolean | null;
  user_id: null;
  team_id: null;
  created_at: string;
  updated_at: string;
  /** Order of creation, for /key/list's `created_at desc` on one clock tick. */
  seq: number;
}

const UNIT_S: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86_400, w: 604_800, mo: 2_592_000 };

/** LiteLLM's duration_in_seconds (`30s`, `5m`, `1h`, `7d`, `2w`, `1mo`). */
function seconds(duration: string): number | undefined {
  const m = /^(\d+)(mo|[smhdw])$/.exec(duration);
  return m ? Number(m[1]) * UNIT_S[m[2]!]! : undefined;
}

const hash = (key: string): string => createHash('sha256').update(key).digest('hex');
/** `_hash_token_if_needed`: a key (sk-...) is hashed, a hash is used as it is. */
const tokenOf = (keyOrHash: string): string => (keyOrHash.startsWith('sk-') ? hash(keyOrHash) : keyOrHash);
/** Python's str() of a float field (pydantic made it a float). */
const pyFloat = (n: number): string => (Number.isInteger(n) ? `${n}.0` : String(n));
const later = (s: number): string => new Date(Date.now() + s * 1000).toISOString();

export class FakeLitellmKeys {
  /** By token (the hash). */
  readonly keys = new Map<string, FakeVirtualKey>();
  /** Every key this LiteLLM ever handed out, in order: tests scan keyplane's output for each. */
  readonly issued: string[] = [];
  private seq = 0;
  private deleteFaults = 0;

  constructor(
    private readonly database: () => boolean,
    private readonly config: { upperboundMaxBudget?: number } = {},
  ) {}

  /** The next `n` /key/delete calls fail as when LiteLLM loses its own database for a moment. */
  failNextDeletes(n: number): void {
    this.deleteFaults = n;
  }

  byAlias(alias: string): FakeVirtualKey | undefined {
    return [...this.keys.values()].find((k) => k.key_alias === alias);
  }

  /** Whether a key (its value) is still valid here. */
  accepts(key: string): boolean {
    return this.keys.has(hash(key));
  }

  route(method: string, url: URL, body: unknown): Reply | undefined {
    const path = url.pathname;
    if (method === 'POST' && path === '/key/generate') return this.generate(body);
    if (method === 'POST' && path === '/key/update') return this.update(body);
    if (method === 'POST' && path === '/key/delete') return this.delete(body);
    if (method === 'GET' && path === '/key/info') return this.info(url.searchParams.get('key'));
    if (method === 'GET' && path === '/key/list') return this.list(url.searchParams);
    return undefined;
  }

  private generate(body: unknown): Reply {
    if (!isObject(body)) return validationError(['body']);
    if (body.models !== undefined && !Array.isArray(body.models)) return new Reply(422, { detail: [{ type: 'list_type', loc: ['body', 'models'], msg: 'Input should be a valid list' }] });
    if (!this.database()) return proxyError(500, pyDict(DB_NOT_CONNECTED), 'internal_server_error');
    if (typeof body.max_budget === 'number' && body.max_budget < 0) {
      return proxyError(400, pyDict(`max_budget cannot be negative. Received: ${pyFloat(body.max_budget)}`), 'internal_server_error');
    }
    const cap = this.config.upperboundMaxBudget;
    if (cap !== undefined && typeof body.max_budget === 'number' && body.max_budget > cap) {
      return proxyError(400, pyDict(`max_budget is over max limit set in config - user_value=${pyFloat(body.max_budget)}; max_value=${cap}`), 'internal_server_error');
    }
    const alias = typeof body.key_alias === 'string' ? body.key_alias : null;
    if (alias !== null && this.byAlias(alias)) return aliasTaken(alias);
    const duration = typeof body.duration === 'string' ? seconds(body.duration) : undefined;
    if (typeof body.duration === 'string' && duration === undefined) return proxyError(500, 'Unsupported duration unit', 'internal_server_error');
    const budgetDuration = typeof body.budget_duration === 'string' ? body.budget_duration : null;
    const key = `sk-${randomBytes(16).toString('base64url')}`;
    const now = new Date().toISOString();
    const row: FakeVirtualKey = {
      token: hash(key),
      key_alias: alias,
      key_name: `sk-...${key.slice(-4)}`,
      models: Array.isArray(body.models) ? body.models.filter((m): m is string => typeof m === 'string') : [],
      max_budget: typeof body.max_budget === 'number' ? body.max_budget : null,
      budget_duration: budgetDuration,
      budget_reset_at: budgetDuration ? later(seconds(budgetDuration) ?? 0) : null,
      rpm_limit: typeof body.rpm_limit === 'number' ? body.rpm_limit : null,
      tpm_limit: typeof body.tpm_limit === 'number' ? body.tpm_limit : null,
      expires: duration === undefined ? null : later(duration),
      metadata: isObject(body.metadata) ? { ...body.metadata } : {},
      spend: typeof body.spend === 'number' ? body.spend : 0,
      blocked: null,
      user_id: null,
      team_id: null,
      created_at: now,
      updated_at: now,
      seq: ++this.seq,
    };
    this.keys.set(row.token, row);
    this.issued.push(key);
    // GenerateKeyResponse: `key` is the key; `token` was remapped to the hash (token_id).
    return new Reply(200, { ...this.row(row), key, token: row.token, token_id: row.token, soft_budget: null, budget_id: null, litellm_budget_table: null });
  }

  private update(body: unknown): Reply {
    if (!isObject(body) || typeof body.key !== 'string') return validationError(['key']);
    if (typeof body.max_budget === 'number' && body.max_budget < 0) {
      return proxyError(400, pyDict(`max_budget cannot be negative. Received: ${pyFloat(body.max_budget)}`), 'auth_error');
    }
    if (!this.database()) return proxyError(400, 'Authentication Error, Not connected to DB!', 'auth_error');
    const row = this.keys.get(tokenOf(body.key));
    if (!row) return proxyError(404, pyDict(`Team not found, passed team_id=None`), 'auth_error');
    if (typeof body.key_alias === 'string' && [...this.keys.values()].some((k) => k.key_alias === body.key_alias && k !== row)) return aliasTaken(body.key_alias);
    if ('key_alias' in body) row.key_alias = typeof body.key_alias === 'string' ? body.key_alias : null;
    if ('models' in body) row.models = Array.isArray(body.models) ? body.models.filter((m): m is string => typeof m === 'string') : [];
    if ('max_budget' in body) row.max_budget = typeof body.max_budget === 'number' ? body.max_budget : null;
    if ('rpm_limit' in body) row.rpm_limit = typeof body.rpm_limit === 'number' ? body.rpm_limit : null;
    if ('tpm_limit' in body) row.tpm_limit = typeof body.tpm_limit === 'number' ? body.tpm_limit : null;
    if ('metadata' in body) row.metadata = isObject(body.metadata) ? { ...body.metadata } : {};
    if ('duration' in body) {
      if (body.duration === null || body.duration === '-1') row.expires = null;
      else if (typeof body.duration === 'string') {
        const s = seconds(body.duration);
        if (s === undefined) return proxyError(400, 'Authentication Error, Unsupported duration unit', 'auth_error');
        row.expires = later(s);
      }
    }
    // prepare_key_update_data pops budget_duration and sets it back only when it is a non-empty string.
    if (typeof body.budget_duration === 'string' && body.budget_duration) {
      row.budget_duration = body.budget_duration;
      row.budget_reset_at = later(seconds(body.budget_duration) ?? 0);
    }
    row.updated_at = new Date().toISOString();
    return new Reply(200, { key: body.key, ...this.row(row), token: row.token });
  }

  private delete(body: unknown): Reply {
    if (!isObject(body)) return validationError(['body']);
    if (!this.database()) return proxyError(500, 'Not connected to DB!', 'internal_server_error');
    if (this.deleteFaults > 0) {
      this.deleteFaults--;
      return proxyError(500, "Can't reach database server at `litellm-db:5432`", 'internal_server_error');
    }
    let tokens: string[];
    if (Array.isArray(body.keys) && body.keys.length) tokens = body.keys.filter((k): k is string => typeof k === 'string').map(tokenOf);
    else if (Array.isArray(body.key_aliases) && body.key_aliases.length) tokens = [...this.keys.values()].filter((k) => (body.key_aliases as unknown[]).includes(k.key_alias)).map((k) => k.token);
    else return proxyError(500, 'Invalid request type', 'internal_server_error');
    const found = tokens.filter((t) => this.keys.has(t));
    if (found.length === 0) return proxyError(404, pyDict('No keys found'), 'internal_server_error');
    for (const t of found) this.keys.delete(t);
    return new Reply(200, { deleted_keys: body.keys ?? body.key_aliases });
  }

  private info(key: string | null): Reply {
    if (!this.database()) {
      return proxyError(500, 'Database not connected. Connect a database to your proxy - https://docs.litellm.ai/docs/simple_proxy#managing-auth---virtual-keys', 'internal_server_error');
    }
    const row = key === null ? undefined : this.keys.get(tokenOf(key));
    if (!row) return proxyError(404, 'Key not found in database', 'not_found_error', 'key');
    return new Reply(200, { key, info: { ...this.row(row), litellm_budget_table: null, object_permission: null } });
  }

  private list(q: URLSearchParams): Reply {
    const page = Number(q.get('page') ?? '1');
    const size = Number(q.get('size') ?? '10');
    if (!Number.isInteger(page) || page < 1) return queryError('page', 'greater_than_equal', 'Input should be greater than or equal to 1');
    if (!Number.isInteger(size) || size < 1 || size > 100) return queryError('size', size < 1 ? 'greater_than_equal' : 'less_than_equal', size < 1 ? 'Input should be greater than or equal to 1' : 'Input should be less than or equal to 100');
    if (!this.database()) return proxyError(500, 'Authentication Error, Database not connected', 'internal_server_error');
    const alias = q.get('key_alias');
    const all = [...this.keys.values()].filter((k) => alias === null || alias === '' || k.key_alias === alias).sort((a, b) => b.seq - a.seq);
    const slice = all.slice((page - 1) * size, page * size);
    const full = q.get('return_full_object') === 'true';
    return new Reply(200, {
      keys: slice.map((k) => (full ? { ...this.row(k), token: k.token, api_key: null } : k.token)),
      total_count: all.length,
      current_page: page,
      total_pages: Math.ceil(all.length / size),
    });
  }

  /** The stored row as LiteLLM shows it (`token` is popped by /key/info; callers add it where LiteLLM keeps it). */
  private row(k: FakeVirtualKey): Record<string, unknown> {
    const { seq: _seq, token: _token, ...shown } = k;
    return { ...shown, aliases: {}, config: {}, permissions: {}, model_spend: {}, model_max_budget: {}, allowed_cache_controls: [], max_parallel_requests: null, budget_id: null, organization_id: null };
  }
}

function aliasTaken(alias: string): Reply {
  return proxyError(400, `Key with alias '${alias}' already exists. Unique key aliases across all keys are required.`, 'bad_request_error', 'key_alias');
}

function queryError(field: string, type: string, msg: string): Reply {
  return new Reply(422, { detail: [{ type, loc: ['query', field], msg }] });
}
