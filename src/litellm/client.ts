import { trimSlashes } from '../url';
import { displayUrl } from '../url';
/**
 * A typed client for LiteLLM's HTTP API: health, credentials, database models and virtual keys.
 *
 * Shapes follow LiteLLM's own endpoints (litellm/proxy/credential_endpoints/endpoints.py,
 * litellm/proxy/management_endpoints/model_management_endpoints.py,
 * litellm/proxy/management_endpoints/key_management_endpoints.py). Errors never carry the
 * master key or a credential value: LiteLLM's own messages are cut short and scrubbed first.
 */

export interface CredentialView {
  credential_name: string;
  /** As GET /credentials returns them: values under names like `api_key` are masked. */
  credential_values: Record<string, unknown>;
  credential_info: Record<string, unknown>;
}

export interface NewCredential {
  credential_name: string;
  credential_values: Record<string, string>;
  credential_info: Record<string, unknown>;
}

/** A PATCH merges both maps into the stored credential; an empty map leaves that part alone. */
export interface CredentialPatch {
  credential_values: Record<string, string>;
  credential_info: Record<string, unknown>;
}

export interface ModelView {
  model_name: string;
  /** `api_key` is removed and credential-like fields are masked by LiteLLM. */
  litellm_params: Record<string, unknown>;
  model_info: Record<string, unknown> & { id?: string; db_model?: boolean };
}

export interface NewModel {
  model_name: string;
  litellm_params: Record<string, unknown>;
  model_info: Record<string, unknown>;
}

export interface ModelPatch {
  model_name?: string;
  litellm_params?: Record<string, unknown>;
  model_info?: Record<string, unknown>;
}

/** A virtual key's settings as `/key/generate` and `/key/update` take them (null clears, where LiteLLM allows it). */
export interface VirtualKeySettings {
  key_alias?: string;
  models?: string[];
  max_budget?: number | null;
  budget_duration?: string;
  rpm_limit?: number | null;
  tpm_limit?: number | null;
  /** `30d`, ...; null: never expires (update only). */
  duration?: string | null;
  metadata?: Record<string, unknown>;
}

export interface NewVirtualKey extends VirtualKeySettings {
  key_alias: string;
  /** What the key has spent already (a rotation carries the old key's spend over to the new one). */
  spend?: number;
}

/** `/key/generate`'s answer: the key itself (shown once), LiteLLM's hash of it, and its abbreviation. */
export interface GeneratedKey {
  key: string;
  /** sha256 of the key, LiteLLM's id for it in every other call. */
  token: string;
  /** `sk-...abcd`, as LiteLLM stores it. */
  keyName: string | null;
  expires: string | null;
}

/** A virtual key as `/key/info` and `/key/list?return_full_object=true` describe it (never the key). */
export interface VirtualKeyInfo {
  /** Present in `/key/list` (LiteLLM drops it from `/key/info`). */
  token: string | null;
  key_alias: string | null;
  key_name: string | null;
  spend: number;
  max_budget: number | null;
  budget_duration: string | null;
  budget_reset_at: string | null;
  expires: string | null;
  blocked: boolean | null;
  models: string[];
  rpm_limit: number | null;
  tpm_limit: number | null;
  metadata: Record<string, unknown>;
}

export interface VirtualKeyPage {
  keys: VirtualKeyInfo[];
  totalPages: number;
}

export interface Readiness {
  status: string;
  /** `connected` when LiteLLM has its database, `Not connected` otherwise. */
  db: string;
  litellmVersion?: string;
}

export type LitellmErrorKind =
  | 'unreachable'
  | 'timeout'
  | 'unauthorized'
  | 'no-database'
  | 'models-not-in-db'
  | 'not-ready'
  | 'http'
  | 'bad-response';

export class LitellmApiError extends Error {
  constructor(
    readonly kind: LitellmErrorKind,
    readonly operation: string,
    message: string,
    readonly status?: number,
  ) {
    super(message);
    this.name = 'LitellmApiError';
  }
}

export interface LitellmClientOptions {
  /** Base URL, e.g. `http://127.0.0.1:4000`. */
  url: string;
  /** LiteLLM's master key; needed for everything but the health endpoints. */
  masterKey?: string;
  /** Per request; default 10 s. */
  timeoutMs?: number;
}

// Each of LiteLLM's ways to say it has no database (the /key/* endpoints alone have four).
const NO_DATABASE = /no connected db|db not connected|no db connected|not connected to db|database not connected/i;
const STORE_MODEL_IN_DB = /STORE_MODEL_IN_DB/;
const MAX_DETAIL = 300;


export class LitellmClient {
  readonly url: string;
  private readonly base: string;
  private readonly masterKey?: string;
  private readonly timeoutMs: number;

  constructor(opts: LitellmClientOptions) {
    this.base = trimSlashes(opts.url);
    this.url = displayUrl(this.base);
    this.masterKey = opts.masterKey;
    this.timeoutMs = opts.timeoutMs ?? 10_000;
  }

  /** `GET /health/liveliness`: true when LiteLLM answers 200. Never throws. */
  async liveliness(): Promise<boolean> {
    try {
      const res = await fetch(`${this.base}/health/liveliness`, { signal: AbortSignal.timeout(this.timeoutMs) });
      await res.arrayBuffer();
      return res.ok;
    } catch {
      return false;
    }
  }

  /** `GET /health/readiness` (no auth). A 503 is a `not-ready` error. */
  async readiness(): Promise<Readiness> {
    const body = await this.request('GET /health/readiness', 'GET', '/health/readiness', { auth: false });
    const o = asObject(body, 'GET /health/readiness');
    return {
      status: typeof o.status === 'string' ? o.status : 'unknown',
      db: typeof o.db === 'string' ? o.db : 'unknown',
      ...(typeof o.litellm_version === 'string' ? { litellmVersion: o.litellm_version } : {}),
    };
  }

  async listCredentials(): Promise<CredentialView[]> {
    const op = 'GET /credentials';
    const o = asObject(await this.request(op, 'GET', '/credentials'), op);
    if (!Array.isArray(o.credentials)) throw new LitellmApiError('bad-response', op, `${op}: the answer has no credentials list`);
    return o.credentials.map((c) => {
      const item = asObject(c, op);
      if (typeof item.credential_name !== 'string') throw new LitellmApiError('bad-response', op, `${op}: a credential has no name`);
      return {
        credential_name: item.credential_name,
        credential_values: isObject(item.credential_values) ? item.credential_values : {},
        credential_info: isObject(item.credential_info) ? item.credential_info : {},
      };
    });
  }

  async createCredential(c: NewCredential): Promise<void> {
    const op = `POST /credentials (${c.credential_name})`;
    await this.write(op, 'POST', '/credentials', c, Object.values(c.credential_values));
  }

  /** LiteLLM ≤1.81 validates the PATCH body as a full CredentialItem, so all three fields are sent. */
  async patchCredential(name: string, patch: CredentialPatch): Promise<void> {
    const op = `PATCH /credentials/${name}`;
    const body = { credential_name: name, credential_values: patch.credential_values, credential_info: patch.credential_info };
    await this.write(op, 'PATCH', `/credentials/${encodeURIComponent(name)}`, body, Object.values(patch.credential_values));
  }

  async deleteCredential(name: string): Promise<void> {
    const op = `DELETE /credentials/${name}`;
    await this.write(op, 'DELETE', `/credentials/${encodeURIComponent(name)}`, undefined, []);
  }

  async listModels(): Promise<ModelView[]> {
    const op = 'GET /model/info';
    const o = asObject(await this.request(op, 'GET', '/model/info'), op);
    if (!Array.isArray(o.data)) throw new LitellmApiError('bad-response', op, `${op}: the answer has no data list`);
    return o.data.map((m) => {
      const item = asObject(m, op);
      return {
        model_name: typeof item.model_name === 'string' ? item.model_name : '',
        litellm_params: isObject(item.litellm_params) ? item.litellm_params : {},
        model_info: isObject(item.model_info) ? item.model_info : {},
      };
    });
  }

  async createModel(m: NewModel): Promise<void> {
    await this.write(`POST /model/new (${m.model_name})`, 'POST', '/model/new', m, []);
  }

  async updateModel(id: string, patch: ModelPatch): Promise<void> {
    await this.write(`PATCH /model/${id}/update`, 'PATCH', `/model/${encodeURIComponent(id)}/update`, patch, []);
  }

  async deleteModel(id: string): Promise<void> {
    await this.write(`POST /model/delete (${id})`, 'POST', '/model/delete', { id }, []);
  }

  /** `POST /key/generate`. The answer holds the key: it is returned, never put in an error or a log. */
  async generateKey(k: NewVirtualKey): Promise<GeneratedKey> {
    const op = `POST /key/generate (${k.key_alias})`;
    const o = asObject(await this.request(op, 'POST', '/key/generate', { body: k }), op);
    // LiteLLM answers `token` (and `token_id`) with the hash, `key` with the key itself.
    const token = typeof o.token_id === 'string' ? o.token_id : o.token;
    if (typeof o.key !== 'string' || typeof token !== 'string' || !token || o.key === token) throw new LitellmApiError('bad-response', op, `${op}: the answer has no key and token`);
    return { key: o.key, token, keyName: typeof o.key_name === 'string' ? o.key_name : null, expires: typeof o.expires === 'string' ? o.expires : null };
  }

  /** `POST /key/update` by the key's hash; only the fields given are changed. */
  async updateKey(token: string, settings: VirtualKeySettings): Promise<VirtualKeyInfo> {
    const op = `POST /key/update (${settings.key_alias ?? 'by hash'})`;
    return keyInfo(asObject(await this.request(op, 'POST', '/key/update', { body: { ...settings, key: token } }), op));
  }

  /** `POST /key/delete` by hashes. LiteLLM answers 404 when none of them exists. */
  async deleteKeys(tokens: string[]): Promise<void> {
    const op = `POST /key/delete (${tokens.length} key(s))`;
    await this.request(op, 'POST', '/key/delete', { body: { keys: tokens } });
  }

  /** `GET /key/info?key=<hash>`: spend and budget. LiteLLM answers 404 for a key it does not have. */
  async keyInfo(token: string): Promise<VirtualKeyInfo> {
    const op = 'GET /key/info';
    const o = asObject(await this.request(op, 'GET', `/key/info?key=${encodeURIComponent(token)}`), op);
    return { ...keyInfo(asObject(o.info, op)), token };
  }

  /** One page of `GET /key/list` with whole key objects (LiteLLM pages at most 100 a time). */
  async listKeys(opts: { page: number; size: number; keyAlias?: string }): Promise<VirtualKeyPage> {
    const op = 'GET /key/list';
    const q = new URLSearchParams({ page: String(opts.page), size: String(opts.size), return_full_object: 'true' });
    if (opts.keyAlias !== undefined) q.set('key_alias', opts.keyAlias);
    const o = asObject(await this.request(op, 'GET', `/key/list?${q}`), op);
    if (!Array.isArray(o.keys)) throw new LitellmApiError('bad-response', op, `${op}: the answer has no keys list`);
    return { keys: o.keys.map((k) => keyInfo(asObject(k, op))), totalPages: typeof o.total_pages === 'number' ? o.total_pages : 0 };
  }

  private async write(op: string, method: string, path: string, body: unknown, sentSecrets: string[]): Promise<void> {
    const res = await this.request(op, method, path, { body, sentSecrets });
    // LiteLLM's credential PATCH/DELETE *return* (not raise) their ProxyException on failure,
    // which FastAPI serialises with status 200: detect that shape.
    if (isObject(res) && res.success !== true && typeof res.message === 'string' && 'code' in res && 'type' in res) {
      const status = Number(res.code);
      throw this.failure(op, Number.isInteger(status) && status >= 400 ? status : 500, res.message, sentSecrets);
    }
  }

  private async request(
    op: string,
    method: string,
    path: string,
    opts: { auth?: boolean; body?: unknown; sentSecrets?: string[] } = {},
  ): Promise<unknown> {
    const headers: Record<string, string> = { accept: 'application/json' };
    if (opts.auth !== false) {
      if (!this.masterKey) throw new LitellmApiError('unauthorized', op, `${op}: no LiteLLM master key is configured`);
      headers.authorization = `Bearer ${this.masterKey}`;
    }
    if (opts.body !== undefined) headers['content-type'] = 'application/json';
    let res: Response;
    let text: string;
    try {
      res = await fetch(this.base + path, {
        method,
        headers,
        body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
        signal: AbortSignal.timeout(this.timeoutMs),
      });
      text = await res.text();
    } catch (err) {
      // Duck-typed: fetch's errors may come from another realm (jest), where instanceof fails.
      const name = typeof err === 'object' && err !== null ? (err as { name?: unknown }).name : undefined;
      if (name === 'TimeoutError' || name === 'AbortError') {
        throw new LitellmApiError('timeout', op, `${op}: LiteLLM at ${this.url} did not answer within ${this.timeoutMs} ms`);
      }
      const code = networkCode(err);
      throw new LitellmApiError('unreachable', op, `${op}: cannot reach LiteLLM at ${this.url}${code ? ` (${code})` : ''}`);
    }
    let body: unknown = text;
    if (text) {
      try {
        body = JSON.parse(text);
      } catch {
        // Not JSON: keep the text for the error message.
      }
    }
    if (!res.ok) {
      if (res.status === 401 || res.status === 403) {
        // LiteLLM echoes part of the key it refused ("Received API Key = sk-...abcd"): never repeat it.
        throw new LitellmApiError('unauthorized', op, `${op}: LiteLLM refused the master key (HTTP ${res.status}); check KEYPLANE_LITELLM_MASTER_KEY`, res.status);
      }
      if (res.status === 503 && path === '/health/readiness') {
        throw new LitellmApiError('not-ready', op, `${op}: LiteLLM at ${this.url} is not ready (HTTP 503)`, 503);
      }
      throw this.failure(op, res.status, errorMessage(body), opts.sentSecrets ?? []);
    }
    return body;
  }

  private failure(op: string, status: number, raw: string, sentSecrets: string[]): LitellmApiError {
    const detail = this.scrub(raw, sentSecrets);
    if (NO_DATABASE.test(raw)) {
      return new LitellmApiError('no-database', op, `${op}: LiteLLM has no database (${detail})`, status);
    }
    if (STORE_MODEL_IN_DB.test(raw)) {
      return new LitellmApiError('models-not-in-db', op, `${op}: LiteLLM does not keep models in its database; set STORE_MODEL_IN_DB=True in its environment`, status);
    }
    return new LitellmApiError('http', op, `${op}: HTTP ${status}: ${detail}`, status);
  }

  /** Removes every value we know is secret, and anything LiteLLM labels as a key, from its message. */
  private scrub(raw: string, sentSecrets: string[]): string {
    let out = raw;
    for (const s of [this.masterKey, ...sentSecrets]) {
      if (s && s.length >= 4) out = out.split(s).join('[REDACTED]');
    }
    out = out.replace(/(api[ _-]?key|key hash \(token\)|token)\s*[=:]\s*[^\s,]+/gi, '$1=[REDACTED]');
    out = out.replace(/\s+/g, ' ').trim();
    return out.length > MAX_DETAIL ? `${out.slice(0, MAX_DETAIL)}…` : out;
  }
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function asObject(v: unknown, op: string): Record<string, unknown> {
  if (!isObject(v)) throw new LitellmApiError('bad-response', op, `${op}: LiteLLM did not answer with a JSON object`);
  return v;
}

/** LiteLLM answers `{"error": {"message"}}` (ProxyException) or FastAPI's `{"detail": ...}`. */
function errorMessage(body: unknown): string {
  if (typeof body === 'string') return body || '(empty answer)';
  if (!isObject(body)) return JSON.stringify(body);
  const err = body.error;
  if (isObject(err) && typeof err.message === 'string') return err.message;
  if (typeof err === 'string') return err;
  if (typeof body.message === 'string') return body.message;
  if (body.detail !== undefined) return typeof body.detail === 'string' ? body.detail : JSON.stringify(body.detail);
  return JSON.stringify(body);
}

const str = (v: unknown): string | null => (typeof v === 'string' ? v : null);
const num = (v: unknown): number | null => (typeof v === 'number' && Number.isFinite(v) ? v : null);

/** The fields of LiteLLM's key row that keyplane reads (LiteLLM_VerificationToken). */
function keyInfo(o: Record<string, unknown>): VirtualKeyInfo {
  return {
    token: str(o.token),
    key_alias: str(o.key_alias),
    key_name: str(o.key_name),
    spend: num(o.spend) ?? 0,
    max_budget: num(o.max_budget),
    budget_duration: str(o.budget_duration),
    budget_reset_at: str(o.budget_reset_at),
    expires: str(o.expires),
    blocked: typeof o.blocked === 'boolean' ? o.blocked : null,
    models: Array.isArray(o.models) ? o.models.filter((m): m is string => typeof m === 'string') : [],
    rpm_limit: num(o.rpm_limit),
    tpm_limit: num(o.tpm_limit),
    metadata: isObject(o.metadata) ? o.metadata : {},
  };
}

function networkCode(err: unknown): string | undefined {
  const cause = typeof err === 'object' && err !== null ? (err as { cause?: unknown }).cause : undefined;
  const code = typeof cause === 'object' && cause !== null ? (cause as { code?: unknown }).code : undefined;
  return typeof code === 'string' ? code : undefined;
}
