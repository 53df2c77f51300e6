import { createHash, randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { FakeLitellmKeys } from './fake-litellm-keys';
import { DB_NOT_CONNECTED, isObject, proxyError, pyDict, Reply, returnedProxyError, validationError } from './litellm-replies';

/**
 * A small stand-in for LiteLLM's admin API, built from LiteLLM's own request and response shapes
 * (credential_endpoints/endpoints.py, model_management_endpoints.py, proxy/_types.py), including
 * its quirks:
 * - GET /credentials masks values whose name holds a sensitive word (`_get_masked_values` in
 *   litellm_core_utils/litellm_logging.py: first 2 + `****` + last 2, `*****` up to 4 characters,
 *   mappings inside such a value masked the same way); GET /model/info drops `api_key` and a few
 *   other credential params (`remove_sensitive_info_from_deployment`), then masks every value under
 *   a name with a sensitive segment (`SensitiveDataMasker.mask_dict`: first 4 + one star per hidden
 *   character + last 4, all stars up to 8; nested mappings and lists too, 10 levels; `None` shown as
 *   "None"), so a credential *name* comes back masked too. It also shows LiteLLM_Params' defaults
 *   (`use_in_pass_through: false`, ...).
 * - LiteLLM reads its master key once, at start: `rotateMasterKey` changes the key it will have,
 *   `restart` makes it take effect.
 * - PATCH /credentials/{name} validates a full CredentialItem and merges values and info; it and
 *   DELETE *return* their ProxyException, which FastAPI serialises with status 200.
 * - Without a database: readiness says `"db": "Not connected"`, reads serve only "config" items,
 *   writes fail with LiteLLM's own messages, and a wrong key gets 400 "No connected db.".
 * - A wrong master key with a database gets 401 and a message echoing the key's last 4 characters.
 * - Virtual keys (`/key/*`): see fake-litellm-keys.ts.
 *
 * `cutAfterWrites` is a fault, not a LiteLLM behaviour: the connection goes away mid-apply, as when
 * the process that writes to LiteLLM dies, and the last write is applied with its answer lost.
 */

export interface FakeCredential {
  credential_name: string;
  credential_values: Record<string, unknown>;
  credential_info: Record<string, unknown>;
}

export interface FakeModel {
  model_id: string;
  model_name: string;
  litellm_params: Record<string, unknown>;
  model_info: Record<string, unknown>;
  /** False for models from config.yaml (not editable through the API). */
  db_model: boolean;
}

export interface RecordedRequest {
  method: string;
  path: string;
  body: unknown;
  status: number;
}

export interface FakeLitellmOptions {
  masterKey: string;
  /** Run as a LiteLLM with a database (default true). */
  database?: boolean;
  /** `STORE_MODEL_IN_DB` (default true). */
  storeModelInDb?: boolean;
  /** Items from LiteLLM's config.yaml: visible in GETs, with or without a database. */
  configCredentials?: FakeCredential[];
  configModels?: Array<Omit<FakeModel, 'db_model' | 'model_id'> & { model_id?: string }>;
  /** `litellm_settings.upperbound_key_generate_params`: /key/generate refuses a max_budget above it. */
  upperboundMaxBudget?: number;
}

const CRED_SENSITIVE = ['authorization', 'token', 'key', 'secret', 'vertex_credentials', 'credentials', 'password', 'passwd'];
const POPPED_PARAMS = ['api_key', 'client_secret', 'vertex_credentials', 'vertex_ai_credentials', 'aws_access_key_id', 'aws_secret_access_key'];
const PARAM_DEFAULTS = { use_in_pass_through: false, use_litellm_proxy: false, merge_reasoning_content_in_choices: false };
const PARAM_SENSITIVE = new Set(['password', 'secret', 'key', 'token', 'auth', 'authorization', 'credential', 'credentials', 'secrets', 'passwords', 'access', 'private', 'certificate', 'certificates', 'fingerprint', 'tenancy']);
const NO_DB_CONNECTED = "No DB Connected. Here's how to do it - https://docs.litellm.ai/docs/proxy/virtual_keys";

export class FakeLitellm {
  readonly credentials = new Map<string, FakeCredential>();
  readonly models = new Map<string, FakeModel>();
  readonly requests: RecordedRequest[] = [];
  /** Virtual keys (`/key/*`). */
  readonly vkeys: FakeLitellmKeys;
  /** Every masked string this fake has served; a write that carries one echoes a masked value. */
  readonly served = new Set<string>();
  maskedEchoes = 0;
  url = '';
  private server?: Server;
  private readonly database: boolean;
  private readonly storeModelInDb: boolean;
  private readonly configCredentials: FakeCredential[];
  private readonly configModels: FakeModel[];
  /** The master key this LiteLLM started with, and the one its environment holds now. */
  private masterKey: string;
  private nextMasterKey: string;
  /** Writes still answered before the cut; after it, every connection is dropped until `heal`. */
  private writesBeforeCut?: number;
  private cut = false;

  constructor(opts: FakeLitellmOptions) {
    this.masterKey = opts.masterKey;
    this.nextMasterKey = opts.masterKey;
    this.database = opts.database ?? true;
    this.storeModelInDb = opts.storeModelInDb ?? true;
    this.configCredentials = opts.configCredentials ?? [];
    this.configModels = (opts.configModels ?? []).map((m) => ({ ...m, model_id: m.model_id ?? randomUUID(), db_model: false }));
    this.vkeys = new FakeLitellmKeys(() => this.database, { upperboundMaxBudget: opts.upperboundMaxBudget });
  }

  static async start(opts: FakeLitellmOptions): Promise<FakeLitellm> {
    const fake = new FakeLitellm(opts);
    await fake.listen();
    return fake;
  }

  /** The environment now holds another master key; LiteLLM keeps the one it started with until `restart`. */
  rotateMasterKey(next: string): void {
    this.nextMasterKey = next;
  }

  /** As if LiteLLM restarted: it reads its master key again (its database survives). */
  restart(): void {
    this.masterKey = this.nextMasterKey;
  }

  /** Requests other than GET. */
  writes(): RecordedRequest[] {
    return this.requests.filter((r) => r.method !== 'GET');
  }

  clearRequests(): void {
    this.requests.length = 0;
  }

  /** Applies `n` more writes, drops the connection instead of answering the last, and every request after it until `heal`. */
  cutAfterWrites(n: number): void {
    this.writesBeforeCut = n;
  }

  heal(): void {
    this.cut = false;
    this.writesBeforeCut = undefined;
  }

  async stop(): Promise<void> {
    const server = this.server;
    if (!server) return;
    this.server = undefined;
    await new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });
  }

  private async listen(): Promise<void> {
    const server = createServer((req, res) => void this.handle(req, res));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => resolve());
    });
    this.server = server;
    this.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (this.cut) {
      req.socket.destroy();
      return;
    }
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const raw = Buffer.concat(chunks).toString('utf8');
    let body: unknown;
    let reply: Reply;
    try {
      body = raw ? JSON.parse(raw) : undefined;
      reply = this.route(req.method ?? 'GET', new URL(req.url ?? '/', 'http://x'), req.headers.authorization, body);
    } catch {
      body = raw;
      reply = new Reply(422, { detail: [{ type: 'json_invalid', loc: ['body', 0], msg: 'JSON decode error' }] });
    }
    if (req.method !== 'GET' && containsAny(body, this.served)) this.maskedEchoes++;
    this.requests.push({ method: req.method ?? 'GET', path: req.url ?? '/', body, status: reply.status });
    if (req.method !== 'GET' && this.writesBeforeCut !== undefined && --this.writesBeforeCut <= 0) {
      this.cut = true;
      req.socket.destroy();
      return;
    }
    res.writeHead(reply.status, { 'content-type': 'application/json' });
    res.end(JSON.stringify(reply.body));
  }

  private route(method: string, url: URL, authorization: string | undefined, body: unknown): Reply {
    const path = url.pathname;
    if (method === 'GET' && path === '/health/liveliness') return new Reply(200, "I'm alive!");
    if (method === 'GET' && path === '/health/readiness') {
      return new Reply(200, { status: 'healthy', db: this.database ? 'connected' : 'Not connected', cache: null, litellm_version: '1.81.15', success_callbacks: [] });
    }
    const denied = this.authenticate(authorization);
    if (denied) return denied;

    if (method === 'GET' && path === '/credentials') return this.listCredentials();
    if (method === 'POST' && path === '/credentials') return this.createCredential(body);
    const cred = /^\/credentials\/(.+)$/.exec(path);
    if (cred && method === 'PATCH') return this.patchCredential(decodeURIComponent(cred[1]!), body);
    if (cred && method === 'DELETE') return this.deleteCredential(decodeURIComponent(cred[1]!));
    if (method === 'GET' && path === '/model/info') return this.listModels();
    if (method === 'POST' && path === '/model/new') return this.createModel(body);
    const upd = /^\/model\/([^/]+)\/update$/.exec(path);
    if (upd && method === 'PATCH') return this.patchModel(decodeURIComponent(upd[1]!), body);
    if (method === 'POST' && path === '/model/delete') return this.deleteModel(body);
    return this.vkeys.route(method, url, body) ?? new Reply(404, { detail: 'Not Found' });
  }

  private authenticate(authorization: string | undefined): Reply | undefined {
    const key = authorization?.replace(/^Bearer\s+/i, '');
    if (!key) return proxyError(401, 'Authentication Error, No api key passed in.', 'auth_error');
    if (key === this.masterKey) return undefined;
    if (!this.database) return new Reply(400, { error: { message: 'No connected db.', type: 'no_db_connection', param: null, code: '400' } });
    const hash = createHash('sha256').update(key).digest('hex');
    return new Reply(401, {
      error: {
        message: `Authentication Error, Invalid proxy server token passed. Received API Key = sk-...${key.slice(-4)}, Key Hash (Token) =${hash}. Unable to find token in cache or \`LiteLLM_VerificationTokenTable\``,
        type: 'token_not_found_in_db',
        param: 'key',
        code: '401',
      },
    });
  }

  private listCredentials(): Reply {
    const all = [...this.configCredentials, ...(this.database ? this.credentials.values() : [])];
    return new Reply(200, {
      success: true,
      credentials: all.map((c) => ({ credential_name: c.credential_name, credential_values: this.maskCredentialValues(c.credential_values), credential_info: c.credential_info })),
    });
  }

  private createCredential(body: unknown): Reply {
    if (!isObject(body) || typeof body.credential_name !== 'string' || !isObject(body.credential_info)) {
      return validationError(['credential_name', 'credential_info']);
    }
    if (!isObject(body.credential_values) || !Object.keys(body.credential_values).length) {
      return new Reply(422, { detail: [{ type: 'value_error', loc: ['body'], msg: 'Value error, Either credential_values or model_id must be set' }] });
    }
    if (!this.database) return proxyError(500, pyDict(DB_NOT_CONNECTED), 'internal_server_error');
    if (this.credentials.has(body.credential_name)) {
      return proxyError(500, 'Unique constraint failed on the fields: (`credential_name`)', 'internal_server_error');
    }
    this.credentials.set(body.credential_name, {
      credential_name: body.credential_name,
      credential_values: { ...body.credential_values },
      credential_info: { ...body.credential_info },
    });
    return new Reply(200, { success: true, message: 'Credential created successfully' });
  }

  private patchCredential(name: string, body: unknown): Reply {
    if (!isObject(body) || typeof body.credential_name !== 'string' || !isObject(body.credential_info) || !isObject(body.credential_values)) {
      return validationError(['credential_name', 'credential_info', 'credential_values']);
    }
    if (!this.database) return returnedProxyError(500, pyDict(DB_NOT_CONNECTED));
    const existing = this.credentials.get(name);
    if (!existing) return returnedProxyError(404, 'Credential not found in DB.');
    if (Object.keys(body.credential_values).length) Object.assign(existing.credential_values, body.credential_values);
    if (Object.keys(body.credential_info).length) Object.assign(existing.credential_info, body.credential_info);
    if (body.credential_name && body.credential_name !== name) {
      this.credentials.delete(name);
      existing.credential_name = body.credential_name;
      this.credentials.set(body.credential_name, existing);
    }
    return new Reply(200, { success: true, message: 'Credential updated successfully' });
  }

  private deleteCredential(name: string): Reply {
    if (!this.database) return returnedProxyError(500, pyDict(DB_NOT_CONNECTED));
    if (!this.credentials.delete(name)) return returnedProxyError(500, 'Record to delete does not exist.');
    return new Reply(200, { success: true, message: 'Credential deleted successfully' });
  }

  private listModels(): Reply {
    const all = [...this.configModels, ...(this.database ? this.models.values() : [])];
    return new Reply(200, {
      data: all.map((m) => {
        const params: Record<string, unknown> = { ...PARAM_DEFAULTS, ...m.litellm_params };
        for (const k of POPPED_PARAMS) delete params[k];
        return {
          model_name: m.model_name,
          litellm_params: this.maskDict(params, 0),
          // The cost map fills what the model_info does not set.
          model_info: { max_tokens: 4096, mode: 'chat', ...m.model_info, id: m.model_id, db_model: m.db_model },
        };
      }),
    });
  }

  private createModel(body: unknown): Reply {
    if (!isObject(body) || typeof body.model_name !== 'string' || !isObject(body.litellm_params) || typeof body.litellm_params.model !== 'string') {
      return validationError(['model_name', 'litellm_params']);
    }
    if (!this.database) return proxyError(500, pyDict(NO_DB_CONNECTED), 'auth_error');
    if (!this.storeModelInDb) return proxyError(500, pyDict("Set `'STORE_MODEL_IN_DB='True'` in your env to enable this feature."), 'auth_error');
    const credName = body.litellm_params.litellm_credential_name;
    if (typeof credName === 'string' && !this.credentials.has(credName) && !this.configCredentials.some((c) => c.credential_name === credName)) {
      return proxyError(400, `Credential '${credName}' not found. Create it via /credentials before attaching it to a model.`, 'validation_error', 'litellm_credential_name');
    }
    const info = isObject(body.model_info) ? { ...body.model_info } : {};
    const id = typeof info.id === 'string' ? info.id : randomUUID();
    if (this.models.has(id)) return proxyError(400, 'Authentication Error, Unique constraint failed on the fields: (`model_id`)', 'auth_error');
    const model: FakeModel = { model_id: id, model_name: body.model_name, litellm_params: { ...body.litellm_params }, model_info: { ...info, id }, db_model: true };
    this.models.set(id, model);
    return new Reply(200, { model_id: id, model_name: model.model_name, litellm_params: model.litellm_params, model_info: model.model_info });
  }

  private patchModel(id: string, body: unknown): Reply {
    if (!this.database) return new Reply(500, { detail: { error: DB_NOT_CONNECTED } });
    if (!this.storeModelInDb) return proxyError(400, 'Model updates only supported for DB-stored models', 'validation_error');
    const model = this.models.get(id);
    if (!model) {
      if (this.configModels.some((m) => m.model_id === id)) return proxyError(400, 'Cannot edit config-based model. Store model in DB via /model/new first.', 'validation_error');
      return proxyError(404, `Model ${id} not found on proxy.`, 'not_found_error');
    }
    if (!isObject(body)) return validationError(['body']);
    if (typeof body.model_name === 'string' && body.model_name) model.model_name = body.model_name;
    // LiteLLM merges with exclude_none: a null leaves the stored value as it was.
    if (isObject(body.litellm_params)) for (const [k, v] of Object.entries(body.litellm_params)) if (v !== null) model.litellm_params[k] = v;
    if (isObject(body.model_info)) for (const [k, v] of Object.entries(body.model_info)) if (v !== null) model.model_info[k] = v;
    return new Reply(200, { model_id: id, model_name: model.model_name, litellm_params: model.litellm_params, model_info: model.model_info });
  }

  private deleteModel(body: unknown): Reply {
    if (!isObject(body) || typeof body.id !== 'string') return validationError(['id']);
    if (!this.database) return proxyError(500, pyDict(NO_DB_CONNECTED), 'auth_error');
    if (!this.models.delete(body.id)) return proxyError(400, pyDict(`Model with id=${body.id} not found in db`), 'auth_error');
    return new Reply(200, { message: `Model: ${body.id} deleted successfully` });
  }

  /** `_get_masked_values(values)` with its defaults (unmasked_length 4, number_of_asterisks 4). */
  private maskCredentialValues(values: Record<string, unknown>, depth = 0): Record<string, unknown> {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(values)) {
      if (!CRED_SENSITIVE.some((w) => k.toLowerCase().includes(w))) out[k] = v;
      else if (isObject(v)) out[k] = depth >= 20 ? v : this.maskCredentialValues(v, depth + 1);
      else if (typeof v !== 'string') out[k] = v;
      else out[k] = this.serve(v.length <= 4 ? '*****' : `${v.slice(0, 2)}****${v.slice(-2)}`);
    }
    return out;
  }

  /** `SensitiveDataMasker().mask_dict` (max depth 10). */
  private maskDict(data: Record<string, unknown>, depth: number): Record<string, unknown> {
    if (depth >= 10) return data;
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(data)) {
      const sensitive = isSensitiveKey(k);
      if (isObject(v)) out[k] = this.maskDict(v, depth + 1);
      else if (Array.isArray(v)) out[k] = this.maskSequence(v, depth + 1, sensitive);
      else if (sensitive) out[k] = this.maskValue(v === null || v === undefined ? '' : pyStr(v));
      else out[k] = typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean' ? v : pyStr(v);
    }
    return out;
  }

  private maskSequence(values: unknown[], depth: number, sensitive: boolean): unknown[] {
    if (depth >= 10) return values;
    return values.map((item) => {
      if (isObject(item)) return this.maskDict(item, depth + 1);
      if (Array.isArray(item)) return this.maskSequence(item, depth + 1, sensitive);
      if (sensitive && typeof item === 'string') return this.maskValue(item);
      return typeof item === 'string' || typeof item === 'number' || typeof item === 'boolean' ? item : pyStr(item);
    });
  }

  private maskValue(s: string): string {
    if (!s) return s;
    return this.serve(s.length <= 8 ? '*'.repeat(s.length) : `${s.slice(0, 4)}${'*'.repeat(s.length - 8)}${s.slice(-4)}`);
  }

  private serve(masked: string): string {
    this.served.add(masked);
    return masked;
  }
}

function isSensitiveKey(key: string): boolean {
  const segments = key.toLowerCase().replace(/-/g, '_').split('_');
  return !segments.includes('cost') && segments.some((s) => PARAM_SENSITIVE.has(s));
}

/** Python's str() of a JSON scalar. */
function pyStr(v: unknown): string {
  if (v === null || v === undefined) return 'None';
  if (typeof v === 'boolean') return v ? 'True' : 'False';
  return String(v);
}

function containsAny(value: unknown, needles: Set<string>): boolean {
  if (!needles.size || value === undefined) return false;
  const text = JSON.stringify(value);
  for (const n of needles) if (n && text.includes(n)) return true;
  return false;
}
