import type { Logger } from '../log';
import { MASTER_KEY_NAME } from '../key-rules';
import { displayUrl } from '../url';
import { LitellmApiError, LitellmClient, type CredentialView } from '../litellm/client';
import type { LitellmStateStore, OwnedKind } from '../litellm/litellm-state-store';
import { adoptable, planReconcile, type Plan } from './litellm-plan';
import type { Reloader, ReloadRequest, ReloadResult } from './reloader';

/**
 * The `litellm-api` reloader: for a LiteLLM that runs with its own database, keyplane's keys
 * become LiteLLM credentials and its models become database models that reference them, so a
 * rotated key reaches LiteLLM without a restart. What to write is planned in litellm-plan.ts; this
 * part talks to LiteLLM, keeps the ledger of what keyplane created there, and finds the master key
 * LiteLLM accepts.
 */

const NO_DATABASE_HINT =
  'LiteLLM has no database, so its admin API cannot store credentials or models; use KEYPLANE_RELOAD=docker or KEYPLANE_RELOAD=command instead, or give LiteLLM a DATABASE_URL';

export interface LitellmApiReloaderOptions {
  url: string;
  /** KEYPLANE_LITELLM_MASTER_KEY: always used when set. Otherwise the stored litellm_master_key, in the version LiteLLM accepts. */
  masterKey?: string;
  /** The ledger of what keyplane created in LiteLLM, and the master key version LiteLLM knows. */
  store: LitellmStateStore;
  log: Logger;
  /** Per HTTP request; default 10 s. */
  timeoutMs?: number;
}

interface Session {
  client: LitellmClient;
  credentials: CredentialView[];
  /** Set while LiteLLM still runs with an older master key than the stored one. */
  note?: string;
}

export class LitellmApiReloader implements Reloader {
  readonly kind = 'litellm-api' as const;
  private readonly log: Logger;
  private readonly target: string;

  constructor(private readonly opts: LitellmApiReloaderOptions) {
    this.log = opts.log.child({ component: 'reload-litellm-api' });
    this.target = displayUrl(opts.url);
  }

  async reload(req: ReloadRequest): Promise<ReloadResult> {
    const startedAt = new Date();
    const fail = (error: string): ReloadResult => {
      this.log.warn('litellm-api reload failed', { revision: req.revision, target: this.target, error });
      return { status: 'failed', error, targets: [{ target: this.target, status: 'failed', startedAt, finishedAt: new Date(), error }] };
    };
    try {
      const ready = await this.client().readiness();
      if (ready.db.toLowerCase() !== 'connected') return fail(`${NO_DATABASE_HINT} (readiness reports db "${ready.db}")`);
      const session = await this.session(req);
      const models = await session.client.listModels();
      const owned = await this.opts.store.owned();
      if (!owned.adopted) {
        const found = adoptable(session.credentials, models);
        await this.opts.store.adopt(found);
        for (const f of found) (f.kind === 'credential' ? owned.credentials : owned.models).add(f.name);
        if (found.length) this.log.info('adopted what an earlier keyplane created in LiteLLM', { credentials: found.filter((f) => f.kind === 'credential').length, models: found.filter((f) => f.kind === 'model').length });
      }
      const plan = planReconcile(req.state, session.credentials, models, { owned, resend: isReconcile(req) });
      for (const f of plan.forget) await this.opts.store.disown(f.kind, f.name);
      const { counts, errors } = await execute(session.client, plan, this.opts.store);
      const notes = [...(session.note ? [session.note] : []), ...plan.copies];
      const problems = [...plan.conflicts, ...errors];
      if (problems.length) return fail(summary(`${problems.length} problem(s) reconciling LiteLLM`, [...problems, ...notes]));
      const note = notes.length ? summary(notes.length === 1 ? 'note' : `${notes.length} notes`, notes) : undefined;
      if (note) this.log.warn('litellm-api reload done, with notes', { revision: req.revision, target: this.target, notes: note });
      this.log.info('litellm-api reload done', { revision: req.revision, target: this.target, ...counts });
      return {
        status: 'ok',
        ...(note ? { error: note } : {}),
        targets: [{ target: this.target, status: 'ok', startedAt, finishedAt: new Date(), ...(note ? { error: note } : {}) }],
      };
    } catch (err) {
      if (err instanceof LitellmApiError && err.kind === 'no-database') return fail(`${NO_DATABASE_HINT} (${err.message})`);
      return fail(err instanceof Error ? err.message : String(err));
    }
  }

  private client(masterKey?: string): LitellmClient {
    return new LitellmClient({ url: this.opts.url, masterKey, timeoutMs: this.opts.timeoutMs });
  }

  /**
   * Signs in with the master key LiteLLM accepts. LiteLLM reads its master key once, at start: after
   * a rotation it keeps the version it started with until it restarts, so the version it last
   * accepted is tried first, then the current one (LiteLLM may have restarted since); the one
   * accepted is remembered.
   */
  private async session(req: ReloadRequest): Promise<Session> {
    if (this.opts.masterKey) {
      const client = this.client(this.opts.masterKey);
      return { client, credentials: await client.listCredentials() };
    }
    // The stored key is found by its name, whatever env var it was given.
    const current = req.state.keys.find((k) => k.name === MASTER_KEY_NAME);
    if (!current) throw new Error('no LiteLLM master key: set KEYPLANE_LITELLM_MASTER_KEY, or store the litellm_master_key platform key');
    const known = await this.opts.store.knownMasterVersion();
    const candidates: Array<{ version: number; value: string }> = [];
    if (known !== null && known !== current.version) {
      const value = await this.opts.store.masterKeyAt(known);
      if (value !== undefined && value !== current.value) candidates.push({ version: known, value });
    }
    candidates.push({ version: current.version, value: current.value });
    for (const c of candidates) {
      const client = this.client(c.value);
      let credentials: CredentialView[];
      try {
        credentials = await client.listCredentials();
      } catch (err) {
        if (err instanceof LitellmApiError && err.kind === 'unauthorized') continue;
        throw err;
      }
      if (c.version !== known) await this.opts.store.setKnownMasterVersion(c.version);
      const note =
        c.version === current.version ? undefined : `LiteLLM still accepts master key version ${c.version}; version ${current.version} takes effect when LiteLLM restarts`;
      return { client, credentials, note };
    }
    const versions = candidates.map((c) => c.version).join(' and ');
    throw new Error(
      `LiteLLM refused litellm_master_key (version ${versions}): restart LiteLLM with the stored master key, or set KEYPLANE_LITELLM_MASTER_KEY to the one it runs with`,
    );
  }
}

/** Whether the syncer's trigger (`reconcile`, `notify+reconcile`, ...) includes a reconcile. */
function isReconcile(req: ReloadRequest): boolean {
  return req.trigger?.split('+').includes('reconcile') ?? false;
}

function summary(title: string, items: string[]): string {
  return `${title}: ${items.slice(0, 3).join('; ')}${items.length > 3 ? '; …' : ''}`;
}

/** LiteLLM answered and refused: nothing was created. A lost answer may have created it. */
function refused(err: unknown): boolean {
  return err instanceof LitellmApiError && (err.kind === 'http' || err.kind === 'models-not-in-db');
}

/**
 * Runs a plan phase by phase, keeping the ledger: an item is recorded before its create is sent
 * and forgotten once LiteLLM refused the create or deleted the item. A refused master key, a
 * missing database or a LiteLLM that does not answer stops it; other errors are collected.
 */
async function execute(client: LitellmClient, plan: Plan, store: LitellmStateStore): Promise<{ counts: { created: number; updated: number; deleted: number }; errors: string[] }> {
  const counts = { created: 0, updated: 0, deleted: 0 };
  const errors: string[] = [];
  const create = async (kind: OwnedKind, name: string, send: () => Promise<void>): Promise<void> => {
    await store.own(kind, name);
    try {
      await send();
    } catch (err) {
      if (refused(err)) await store.disown(kind, name);
      throw err;
    }
  };
  for (const op of [...plan.credentials, ...plan.models, ...plan.credentialDeletes]) {
    try {
      switch (op.op) {
        case 'credential:create':
          await create('credential', op.name, () => client.createCredential(op.body));
          counts.created++;
          break;
        case 'credential:patch':
          await client.patchCredential(op.name, { credential_values: op.values, credential_info: op.info });
          counts.updated++;
          break;
        case 'credential:recreate':
          // A PATCH can add or change a value but not remove one.
          await client.deleteCredential(op.name);
          await client.createCredential(op.body);
          counts.updated++;
          break;
        case 'credential:delete':
          await client.deleteCredential(op.name);
          await store.disown('credential', op.name);
          counts.deleted++;
          break;
        case 'model:create':
          await create('model', op.id, () => client.createModel(op.body));
          counts.created++;
          break;
        case 'model:update':
          await client.updateModel(op.id, op.patch);
          counts.updated++;
          break;
        case 'model:recreate':
          await client.deleteModel(op.id);
          await client.createModel(op.body);
          counts.updated++;
          break;
        case 'model:delete':
          await client.deleteModel(op.id);
          await store.disown('model', op.id);
          counts.deleted++;
          break;
      }
    } catch (err) {
      if (!(err instanceof LitellmApiError) || err.kind === 'unauthorized' || err.kind === 'no-database' || err.kind === 'unreachable' || err.kind === 'timeout') throw err;
      errors.push(err.message);
    }
  }
  return { counts, errors };
}
