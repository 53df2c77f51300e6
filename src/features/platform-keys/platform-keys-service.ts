import type { KeyState } from '../../sync/desired-state';
import type { Pool, PoolClient } from '../../db/pool';
import { CommitOutcomeUnknown, isConnectionError, TransientConflict, withBatchedTransaction, withRetry, withTransaction } from '../../db/pool';
import { type Fingerprinter, type Keyring, last4, maskKey } from '../../crypto/keyring';
import { platformKeyRef } from '../../crypto/secret-tables';
import { AppError, Conflict, NotFound, PreconditionFailed, Unprocessable, ValidationFailed } from '../../http/errors';
import { roleAtLeast, type RequestContext } from '../../http/principal';
import { appendAudit, auditRow, auditStatement } from '../audit/audit-store';
import { KeyedMutex } from '../../keyed-mutex';
import { envVarProblem, isReservedKey, MASTER_KEY_NAME } from '../../key-rules';
import { pageOf, type PageRequest } from '../../http/paging';
import { PlatformKeysStore, type KeyFilter, type KeyRow, type VersionRow } from './platform-keys-store';
import { KeyHealthStore, type KeyHealthView } from '../../health/key-health-store';

export interface PlatformKeyView {
  name: string;
  env_var: string;
  masked_key: string;
  fingerprint: string;
  version: number;
  expires_at: string | null;
  created_at: string;
  updated_at: string;
  source: 'database';
  /** In service (`active`, `cooling`, `retiring`) or not (`disabled`); see KeyStatesService. */
  state: KeyState;
  state_reason: string | null;
  state_note?: string;
  state_since: string;
  state_until: string | null;
  replaced_by?: string;
  /** What the last probe of the key found (null: never probed); in the key's own view only. */
  health?: KeyHealthView | null;
}

export interface PutKeyInput {
  api_key: string;
  env_var?: string;
  expires_at?: string | null;
  validate?: boolean;
}

/** What `validate: true` asks of the health prober: try the key against the provider(s) that use it. */
export type KeyValidation = { ok: true; providers: string[] } | { ok: false; reason: string; detail: string; providers: string[] };
export type KeyValidator = (keyName: string, apiKey: string) => Promise<KeyValidation>;

/** `openrouter` -> `OPENROUTER_API_KEY`; a name that already ends in `_key` keeps it (`litellm_master_key` -> `LITELLM_MASTER_KEY`). */
export function defaultEnvVar(name: string): string {
  const upper = name.toUpperCase().replace(/-/g, '_');
  return /_KEY$/.test(upper) ? upper : `${upper}_API_KEY`;
}

/** `If-Match: "3"` (or `3`, or `W/"3"`) -> 3; absent -> undefined; anything else is a 400 on that header. */
export function parseIfMatch(header: string | undefined): number | undefined {
  if (header === undefined || header.trim() === '*') return undefined;
  const m = /^\s*(?:W\/)?"?(\d{1,9})"?\s*$/.exec(header);
  if (!m) throw new ValidationFailed([{ field: 'If-Match', rule: 'must be a quoted version number such as "3"' }]);
  return Number(m[1]);
}

export const etag = (version: number): string => `"${version}"`;

interface QueuedRotation {
  value: string;
  expiresAt: Date | null;
  ctx: RequestContext;
  resolve: (view: PlatformKeyView | undefined) => void;
  reject: (err: unknown) => void;
}

const iso = (d: Date | null): string | null => (d ? d.toISOString() : null);

export type VersionView = Omit<VersionRow, 'last4' | 'kid' | 'expires_at' | 'created_at'> & {
  masked_key: string;
  kid: string;
  expires_at: string | null;
  created_at: string;
  current: boolean;
};

export function toView(r: KeyRow): PlatformKeyView {
  return {
    name: r.name,
    env_var: r.env_var,
    masked_key: maskKey(r.last4),
    fingerprint: r.fingerprint,
    version: r.current_version,
    expires_at: iso(r.expires_at),
    created_at: r.created_at.toISOString(),
    updated_at: r.updated_at.toISOString(),
    source: 'database',
    state: r.state,
    state_reason: r.state_reason,
    ...(r.state_note ? { state_note: r.state_note } : {}),
    state_since: r.state_since.toISOString(),
    state_until: iso(r.state_until),
    ...(r.replaced_by ? { replaced_by: r.replaced_by } : {}),
  };
}

export interface PlatformKeyGuards {
  /** Whether the admin's base config turns LiteLLM's auth off on purpose (general_settings.master_key set there). */
  authOffOnPurpose?: () => Promise<boolean>;
}

export class PlatformKeysService {
  readonly store: PlatformKeysStore;
  private readonly keyHealth: KeyHealthStore;
  private readonly writers = new KeyedMutex();
  /** The head version this instance last wrote, per key (see rotateBatch). */
  private readonly heads = new Map<string, { version: number; envVar: string }>();
  /** Plain rotations waiting for their key's turn, written together (see drainRotations). */
  private readonly rotations = new Map<string, QueuedRotation[]>();

  constructor(
    private readonly pool: Pool,
    private readonly keyring: Keyring,
    private readonly fingerprints: Fingerprinter,
    private readonly validator?: KeyValidator,
    private readonly guards: PlatformKeyGuards = {},
  ) {
    this.store = new PlatformKeysStore(pool);
    this.keyHealth = new KeyHealthStore(pool);
  }

  /** One page of keys by name that pass `filter`; `next` is the name to continue after. */
  async list(page: PageRequest<string>, filter: KeyFilter = {}): Promise<{ items: PlatformKeyView[]; next: string | undefined }> {
    const p = pageOf(await this.store.list({ limit: page.limit + 1, after: page.after }, filter), page.limit, (r) => r.name);
    return { items: p.items.map(toView), next: p.next };
  }

  async get(name: string): Promise<PlatformKeyView> {
    const [row, health] = await Promise.all([this.store.get(name), this.keyHealth.view(name)]);
    if (!row) throw new NotFound(`platform key ${name}`);
    return { ...toView(row), health };
  }

  /** One page of a key's versions, newest first; `next` is the version to continue before. */
  async versions(name: string, page: PageRequest<number>): Promise<{ items: VersionView[]; next: number | undefined }> {
    const head = await this.store.get(name);
    if (!head) throw new NotFound(`platform key ${name}`);
    const p = pageOf(await this.store.versions(name, { limit: page.limit + 1, after: page.after }), page.limit, (v) => v.version);
    const items = p.items.map((v) => ({
      name: v.name,
      version: v.version,
      masked_key: maskKey(v.last4),
      fingerprint: v.fingerprint,
      kid: v.kid,
      expires_at: iso(v.expires_at),
      created_by: v.created_by,
      created_at: v.created_at.toISOString(),
      current: v.version === head.current_version,
    }));
    return { items, next: p.next };
  }

  async put(name: string, input: PutKeyInput, ctx: RequestContext, ifMatch?: number): Promise<PlatformKeyView> {
    // Checked before validate sends the key anywhere; a default env var is checked where it is chosen (writeVersion).
    const envRule = input.env_var === undefined ? undefined : envVarProblem(input.env_var, name);
    if (envRule) throw new ValidationFailed([{ field: 'env_var', rule: envRule }]);
    if (name === MASTER_KEY_NAME && !input.api_key.startsWith('sk-')) {
      throw new ValidationFailed([{ field: 'api_key', rule: "must start with sk-: LiteLLM refuses a master key that does not" }]);
    }
    if (input.validate) await this.validateKey(name, input.api_key);
    const expiresAt = input.expires_at ? new Date(input.expires_at) : null;
    const head = this.heads.get(name);
    // A plain rotation of a key this instance wrote before joins the key's rotation queue.
    if (head && ifMatch === undefined && (input.env_var === undefined || input.env_var === head.envVar)) {
      const view = await new Promise<PlatformKeyView | undefined>((resolve, reject) => this.enqueueRotation(name, { value: input.api_key, expiresAt, ctx, resolve, reject }));
      if (view) return view;
    }
    return this.writers.run(name, () => this.writeVersion(name, ctx, ifMatch, 'platform_key.put', async () => ({ value: input.api_key, expiresAt, envVar: input.env_var })));
  }

  private enqueueRotation(name: string, r: QueuedRotation): void {
    const queue = this.rotations.get(name);
    if (queue) {
      queue.push(r);
      return;
    }
    this.rotations.set(name, [r]);
    void this.writers.run(name, () => this.drainRotations(name));
  }

  /**
   * Writes the rotations queued for a key, all that waited, in one statement (group commit: one
   * round trip and one WAL flush for many rotations, each still its own version and audit row).
   * A rotation answered `undefined` takes the locked path instead.
   */
  private async drainRotations(name: string): Promise<void> {
    for (;;) {
      const queue = this.rotations.get(name)!;
      if (queue.length === 0) {
        this.rotations.delete(name);
        return;
      }
      const batch = queue.splice(0, 200);
      try {
        const views = await this.rotateBatch(name, batch);
        batch.forEach((r, i) => r.resolve(views?.[i]));
      } catch (err) {
        // One statement for all: a value it refused fails all of them. Unless the connection broke
        // (then nothing may be written twice), each is written on its own, and only the bad one fails.
        if (batch.length === 1 || isConnectionError(err) || err instanceof CommitOutcomeUnknown) {
          for (const r of batch) r.reject(err);
        } else {
          for (const r of batch) await this.rotateAlone(name, r);
        }
      }
    }
  }

  /** One queued rotation on the locked path (the caller holds the key's mutex). */
  private async rotateAlone(name: string, r: QueuedRotation): Promise<void> {
    try {
      r.resolve(await this.writeVersion(name, r.ctx, undefined, 'platform_key.put', async () => ({ value: r.value, expiresAt: r.expiresAt })));
    } catch (err) {
      r.reject(err);
    }
  }

  /** From the head version remembered here; undefined when another instance moved the head meanwhile. */
  private async rotateBatch(name: string, batch: QueuedRotation[]): Promise<PlatformKeyView[] | undefined> {
    const head = this.heads.get(name);
    if (!head) return undefined;
    const items = await Promise.all(
      batch.map(async (r, i) => {
        const version = head.version + 1 + i;
        const { jwe, kid } = await this.keyring.encrypt(r.value, platformKeyRef(name, version));
        const fingerprint = this.fingerprints.of(r.value);
        const audit = auditRow({
          actor: r.ctx.principal.actor,
          action: 'platform_key.put',
          target: `platform_key/${name}`,
          version,
          requestId: r.ctx.requestId,
          details: { env_var: head.envVar, fingerprint, previous_version: version - 1 },
        });
        return { version, jwe, kid, fingerprint, last4: last4(r.value), expiresAt: r.expiresAt, createdBy: audit.actor, audit };
      }),
    );
    let row: KeyRow | undefined;
    // Connected first: a database that cannot be reached has seen nothing, so that is "unavailable",
    // never "outcome unknown".
    const client = await this.pool.connect();
    let failure: unknown;
    try {
      row = await this.store.rotateMany(client, { name, envVar: head.envVar, prev: head.version }, batch.map((r) => r.value), items);
    } catch (err) {
      failure = err;
    } finally {
      client.release(failure !== undefined && isConnectionError(failure) ? (failure as Error) : undefined);
    }
    if (failure !== undefined) {
      const err = failure;
      // The statement is its own transaction: after a broken connection, look whether it committed
      // (these exact versions with these values) before anything is written again.
      this.heads.delete(name);
      if (!isConnectionError(err)) throw err;
      // A look that fails leaves the outcome unknown: "unavailable, retry" would have it written twice.
      const landed = await withRetry(() => this.store.versionFingerprints(name, items[0]!.version, items[items.length - 1]!.version)).catch(() => {
        throw new CommitOutcomeUnknown(err);
      });
      if (landed.size === 0) return undefined;
      if (!items.every((it) => landed.get(it.version) === it.fingerprint)) throw new CommitOutcomeUnknown(err);
      row = await this.store.get(name);
      if (!row) throw new CommitOutcomeUnknown(err);
    }
    if (!row) {
      this.heads.delete(name);
      return undefined;
    }
    const written = row;
    this.remember(toView(written));
    return items.map((it) => ({
      ...toView(written),
      masked_key: maskKey(it.last4),
      fingerprint: it.fingerprint,
      version: it.version,
      expires_at: iso(it.expiresAt),
    }));
  }

  private remember(view: PlatformKeyView): PlatformKeyView {
    this.heads.set(view.name, { version: view.version, envVar: view.env_var });
    return view;
  }

  /**
   * Creates key `name` at version 1 inside the caller's transaction, with its audit row, under the
   * rules put() applies to a new key; a key of that name already there is a 409. For a write that
   * adds a key together with other rows (a rotation adds it to pools in the same commit).
   */
  async createIn(c: PoolClient, name: string, input: { value: string; envVar?: string; expiresAt: Date | null }, ctx: RequestContext, details: Record<string, unknown> = {}): Promise<PlatformKeyView> {
    if (isReservedKey(name)) throw new ValidationFailed([{ field: 'name', rule: `${name} is LiteLLM's own key, not a provider's` }]);
    const envVar = input.envVar ?? defaultEnvVar(name);
    const rule = envVarProblem(envVar, name);
    if (rule) throw new ValidationFailed([{ field: 'env_var', rule: input.envVar === undefined ? `is required here: the default ${envVar} ${rule}` : rule }]);
    const clash = await this.store.textEqualTo(input.value, c);
    if (clash) throw new ValidationFailed([{ field: 'api_key', rule: `equals a ${clash} already stored in clear; a key's value must be the provider's secret` }]);
    const owner = await this.store.envVarOwner(c, envVar);
    if (owner) throw new Conflict(`env var ${envVar} is already used by platform key ${owner}`, { env_var: envVar, used_by: owner });
    const { jwe, kid } = await this.keyring.encrypt(input.value, platformKeyRef(name, 1));
    const fingerprint = this.fingerprints.of(input.value);
    const created = (
      await c.query<KeyRow>(
        this.store.writeVersionStatement(true, { name, envVar, version: 1, jwe, kid, fingerprint, last4: last4(input.value), expiresAt: input.expiresAt, createdBy: ctx.principal.actor }),
      )
    ).rows[0];
    if (!created) throw new Conflict(`platform key ${name} already exists`, { name });
    await appendAudit(c, {
      actor: ctx.principal.actor,
      action: 'platform_key.put',
      target: `platform_key/${name}`,
      version: 1,
      requestId: ctx.requestId,
      details: { env_var: envVar, fingerprint, previous_version: null, ...details },
    });
    return toView(created);
  }

  /** Writes the value of an earlier version as a new version: history is never rewritten. */
  async rollback(name: string, toVersion: number, ctx: RequestContext, ifMatch?: number): Promise<PlatformKeyView> {
    return this.writers.run(name, () =>
      this.writeVersion(name, ctx, ifMatch, 'platform_key.rollback', async (c) => {
        const old = await this.store.cipher(name, toVersion, c);
        if (!old) throw new NotFound(`version ${toVersion} of platform key ${name}`);
        return { value: await this.keyring.decrypt(old.jwe, platformKeyRef(name, toVersion)), expiresAt: old.expires_at, rolledBackTo: toVersion };
      }),
    );
  }

  async decrypted(name: string, ctx: RequestContext): Promise<{ api_key: string; source: 'database'; version: number; env_var: string }> {
    return withTransaction(this.pool, async (c) => {
      const head = await this.store.get(name, c);
      if (!head) throw new NotFound(`platform key ${name}`);
      const cipher = await this.store.cipher(name, head.current_version, c);
      const apiKey = await this.keyring.decrypt(cipher!.jwe, platformKeyRef(name, head.current_version));
      await appendAudit(c, {
        actor: ctx.principal.actor,
        action: 'platform_key.read_decrypted',
        target: `platform_key/${name}`,
        version: head.current_version,
        requestId: ctx.requestId,
        details: { fingerprint: head.fingerprint },
      });
      return { api_key: apiKey, source: 'database', version: head.current_version, env_var: head.env_var };
    });
  }

  async delete(name: string, ctx: RequestContext, ifMatch?: number): Promise<void> {
    // Fail closed: without its master key LiteLLM would serve everyone without authentication.
    if (name === MASTER_KEY_NAME && !(await this.authOffOnPurpose())) {
      throw new Conflict(
        `${MASTER_KEY_NAME} is LiteLLM's master key and the rendered config relies on it: deleting it would leave LiteLLM without authentication. ` +
          'Rotate it with PUT instead, or turn authentication off on purpose (general_settings.master_key: null in KEYPLANE_BASE_CONFIG) first',
        { reason: 'master_key_in_use' },
      );
    }
    this.heads.delete(name);
    await withTransaction(this.pool, async (c) => {
      const head = await this.store.get(name, c, true);
      if (!head) throw new NotFound(`platform key ${name}`);
      if (ifMatch !== undefined && ifMatch !== head.current_version) {
        throw new PreconditionFailed(`platform key ${name} is at version ${head.current_version}, not ${ifMatch}`, { current_version: head.current_version });
      }
      await this.store.delete(c, name);
      await appendAudit(c, {
        actor: ctx.principal.actor,
        action: 'platform_key.delete',
        target: `platform_key/${name}`,
        version: head.current_version,
        requestId: ctx.requestId,
        details: { env_var: head.env_var },
      });
    });
  }

  /** Every key's current value, decrypted, for the renderer and the prober. Never leaves the process. */
  async currentSecrets(client: Pool | PoolClient = this.pool): Promise<Array<{ name: string; env_var: string; version: number; value: string; expires_at: Date | null; fingerprint: string }>> {
    const rows = await this.store.currentCiphers(client);
    return Promise.all(
      rows.map(async (r) => {
        const value = await this.keyring.decrypt(r.jwe, platformKeyRef(r.name, r.version));
        return { name: r.name, env_var: r.env_var, version: r.version, value, expires_at: r.expires_at, fingerprint: this.fingerprints.of(value) };
      }),
    );
  }

  fingerprint(value: string): string {
    return this.fingerprints.of(value);
  }

  private async authOffOnPurpose(): Promise<boolean> {
    try {
      return (await this.guards.authOffOnPurpose?.()) ?? false;
    } catch {
      // A base config that cannot be read does not turn auth off.
      return false;
    }
  }

  private async validateKey(name: string, apiKey: string): Promise<void> {
    if (!this.validator) throw new Unprocessable('validate was asked for, but no prober is configured to test keys');
    const result = await this.validator(name, apiKey);
    if (!result.ok) {
      throw new Unprocessable(`the provider refused the new key for ${name} (${result.reason}): ${result.detail}; the current version stays active`, {
        reason: result.reason,
        providers: result.providers,
      });
    }
  }

  private async writeVersion(
    name: string,
    ctx: RequestContext,
    ifMatch: number | undefined,
    action: string,
    source: (c: PoolClient) => Promise<{ value: string; expiresAt: Date | null; envVar?: string; rolledBackTo?: number }>,
  ): Promise<PlatformKeyView> {
    // Callers hold this key's mutex.
    return withBatchedTransaction(this.pool, this.store.lockHeadStatement(name), async (c, locked, commit) => {
      const head = locked!.rows[0] as { env_var: string; current_version: number } | undefined;
      const current = head?.current_version ?? 0;
      if (ifMatch !== undefined && current !== ifMatch) {
        throw new PreconditionFailed(
          head ? `platform key ${name} is at version ${current}, not ${ifMatch}` : `platform key ${name} does not exist yet (If-Match "0" creates it)`,
          { current_version: current },
        );
      }
      const { value, expiresAt, envVar: askedEnvVar, rolledBackTo } = await source(c);
      // A value that equals a model's or a route's string would make that row look like a leak and drop
      // it from the render (the batched path checks the same inside its statement).
      const clash = await this.store.textEqualTo(value, c);
      if (clash) throw new ValidationFailed([{ field: 'api_key', rule: `equals a ${clash} already stored in clear; a key's value must be the provider's secret` }]);
      const envVar = askedEnvVar ?? head?.env_var ?? defaultEnvVar(name);
      // LiteLLM reads some env vars on its own (OPENAI_API_KEY for any openai model without a key):
      // renaming an existing key's variable can send it to another provider, so it is an admin's call.
      if (head && envVar !== head.env_var && !roleAtLeast(ctx.principal.role, 'admin')) {
        throw new AppError(403, 'destination-not-approved', 'Destination not approved', `env_var: renaming the env var of an existing key (${head.env_var}) needs the admin role: LiteLLM may send a key to a provider by its variable's name alone`, {
          errors: [{ field: 'env_var', rule: 'renaming the env var of an existing key needs the admin role' }],
        });
      }
      if (!head && askedEnvVar === undefined) {
        const rule = envVarProblem(envVar, name);
        if (rule) throw new ValidationFailed([{ field: 'env_var', rule: `is required here: the default ${envVar} ${rule}` }]);
      }
      if (envVar !== head?.env_var) {
        const owner = await this.store.envVarOwner(c, envVar);
        if (owner && owner !== name) throw new Conflict(`env var ${envVar} is already used by platform key ${owner}`, { env_var: envVar, used_by: owner });
      }
      // Every write makes max + 1 the current version (rollback too), so the head's version is the highest.
      const version = current + 1;
      const { jwe, kid } = await this.keyring.encrypt(value, platformKeyRef(name, version));
      const fingerprint = this.fingerprints.of(value);
      const write = this.store.writeVersionStatement(!head, {
        name, envVar, version, jwe, kid, fingerprint, last4: last4(value), expiresAt, createdBy: ctx.principal.actor,
      });
      const audit = auditStatement({
        actor: ctx.principal.actor,
        action,
        target: `platform_key/${name}`,
        version,
        requestId: ctx.requestId,
        details: { env_var: envVar, fingerprint, previous_version: head?.current_version ?? null, ...(rolledBackTo ? { rolled_back_to: rolledBackTo } : {}) },
      });
      if (head) {
        // A rotation of an existing key, locked above, cannot miss: write, audit and commit in one round trip.
        const [written] = await commit(write, audit);
        return this.remember(toView(written!.rows[0] as KeyRow));
      }
      const created = (await c.query<KeyRow>(write)).rows[0];
      // Created concurrently: run again from the top, now as an update of that key.
      if (!created) throw new TransientConflict(`platform key ${name} was created concurrently`);
      await c.query(audit);
      return this.remember(toView(created));
    });
  }
}
