import type { Pool } from '../../db/pool';
import { withTransaction } from '../../db/pool';
import { formatDuration } from '../../duration';
import { AppError, Conflict } from '../../http/errors';
import type { RequestContext } from '../../http/principal';
import { LitellmApiError, type GeneratedKey } from '../../litellm/client';
import type { Logger, SecretRegistry } from '../../log';
import { appendAudit } from '../audit/audit-store';
import type { LitellmAdmin } from './litellm-admin';
import { generateSettings, OP_FIELD, pick, type VirtualKeysService, type VirtualKeyView } from './virtual-keys-service';
import type { RotationRow, VirtualKeyRow, VirtualKeysStore } from './virtual-keys-store';

export const GRACE_MAX_MS = 30 * 86_400_000;

export interface RotationView {
  rotation_id: number;
  alias: string;
  /** `generating`, `retiring` (both keys valid until delete_at), `done` (the old key is deleted). */
  status: RotationRow['status'];
  grace_period: string;
  old_token: string;
  old_masked_key: string | null;
  new_token: string | null;
  new_masked_key: string | null;
  delete_at: string | null;
  deleted_at: string | null;
  attempts: number;
  last_error: string | null;
  note: string | null;
  created_by: string;
  created_at: string;
}

/** The answer to a rotation: the new key the first time, never again. */
export interface RotateResult {
  key: string | null;
  view: VirtualKeyView | undefined;
  rotation: RotationView;
  replayed: boolean;
}

export interface VirtualKeyRotationsDeps {
  pool: Pool;
  keys: VirtualKeysService;
  litellm: LitellmAdmin;
  /** Keyed digest of a request: a replay is recognised without keeping anything from it. */
  fingerprint: (text: string) => string;
  secrets: SecretRegistry;
  log: Logger;
  /** Tells this instance's worker that a deadline was set (the leader also looks every few seconds). */
  nudge?: () => void;
}

/** The same Idempotency-Key was sent with another request. */
class IdempotencyKeyReused extends AppError {
  constructor(key: string, r: RotationRow) {
    super(422, 'idempotency-key-reused', 'Idempotency-Key reused', `Idempotency-Key ${key} was already used for another request (rotation ${r.id} of ${r.alias}); send a new key for a new rotation`, { rotation_id: r.id });
  }
}

/** The alias the old key carries in LiteLLM while it retires: LiteLLM wants each alias on one key only. */
export const retiringAlias = (alias: string, id: number): string => `${alias}.retiring-${id}`;

/** The tag of the key a rotation asks LiteLLM to make (metadata.keyplane_op). */
const rotationOp = (id: number): string => `rotate:${id}`;

/**
 * `POST .../virtual-keys/:alias/rotate`: a new key with the same settings (and the spend so far)
 * takes the alias; the old one keeps working until `grace_period` has passed, then the
 * VirtualKeyWorker (on the leader) deletes it in LiteLLM. LiteLLM's own grace period on
 * /key/regenerate is Enterprise-only, so the overlap is kept here.
 *
 * Steps: a `generating` row is committed first (one rotation per alias at a time; it claims the
 * Idempotency-Key), then LiteLLM renames the old key's alias, makes the new key, and one
 * transaction gives the alias the new key and sets the deadline. A step that fails is undone (the
 * new key deleted, the old alias given back, the row dropped); what a crash leaves is undone by
 * the leader (`recover`).
 */
export class VirtualKeyRotations {
  constructor(private readonly deps: VirtualKeyRotationsDeps) {}

  private get store(): VirtualKeysStore {
    return this.deps.keys.store;
  }

  async rotate(alias: string, graceMs: number, ctx: RequestContext, idempotencyKey?: string): Promise<RotateResult> {
    const digest = idempotencyKey === undefined ? null : this.deps.fingerprint(JSON.stringify({ alias, grace_ms: graceMs }));
    if (idempotencyKey !== undefined) {
      const prior = await this.replay(idempotencyKey, digest!);
      if (prior) return prior;
    }
    let started: { r: RotationRow; cur: VirtualKeyRow };
    try {
      started = await withTransaction(this.deps.pool, async (c) => {
        const cur = await this.deps.keys.writable(c, alias);
        const r = await this.store.startRotation(c, { alias, oldToken: cur.token!, oldMaskedKey: cur.masked_key, graceMs, idempotencyKey: idempotencyKey ?? null, requestDigest: digest, createdBy: ctx.principal.actor });
        return { r, cur };
      });
    } catch (err) {
      // The same Idempotency-Key sent twice at once: the one that committed first is the rotation.
      if (idempotencyKey !== undefined && (err instanceof AppError || (err as { code?: string }).code === '23505')) {
        const prior = await this.replay(idempotencyKey, digest!);
        if (prior) return prior;
      }
      throw err;
    }
    const { r, cur } = started;
    let touched = false;
    let made: GeneratedKey;
    try {
      made = await this.deps.litellm.call(async (l) => {
        const info = await l.keyInfo(cur.token!).catch((err: unknown) => {
          if (err instanceof LitellmApiError && err.status === 404) {
            throw new AppError(409, 'virtual-key-gone', 'Virtual key gone from LiteLLM', `LiteLLM no longer has the key of ${alias} (it was deleted there): there is nothing to overlap with; DELETE it here and create it again`, { alias });
          }
          throw err;
        });
        // Set first: a rename whose answer is lost may have happened, and giving the alias back is harmless.
        touched = true;
        await l.updateKey(cur.token!, { key_alias: retiringAlias(alias, r.id) });
        // The spend so far carries over, so the budget goes on where the old key left it.
        return l.generateKey({ ...generateSettings(pick(cur), rotationOp(r.id)), key_alias: alias, spend: info.spend });
      });
    } catch (err) {
      await this.undo(r, { touched });
      throw err;
    }
    this.deps.secrets.add(made.key);
    let out: { view: VirtualKeyRow; rot: RotationRow };
    try {
      out = await withTransaction(this.deps.pool, async (c) => {
        const view = await this.store.replaceKey(c, alias, cur.token!, { token: made.token, maskedKey: made.keyName, expiresAt: made.expires ? new Date(made.expires) : null });
        if (!view) throw new Conflict(`virtual key ${alias} changed while it was rotated; rotate it again`, { alias });
        const rot = await this.store.retire(c, r.id, { token: made.token, maskedKey: made.keyName });
        await appendAudit(c, {
          actor: ctx.principal.actor, action: 'virtual_key.rotate', target: `virtual_key/${alias}`, requestId: ctx.requestId,
          details: { rotation_id: r.id, old_token: cur.token, new_token: made.token, grace_period: formatDuration(graceMs), delete_at: rot.delete_at },
        });
        return { view, rot };
      }, { attempts: 1 });
    } catch (err) {
      await this.undo(r, { touched: true, newToken: made.token });
      throw err;
    }
    this.deps.log.info('virtual key rotated: the old key stays valid until its deadline', { alias, rotation_id: r.id, delete_at: out.rot.delete_at });
    this.deps.nudge?.();
    return { key: made.key, view: (await this.deps.keys.views([out.view]))[0], rotation: rotationView(out.rot), replayed: false };
  }

  /**
   * Undoes a rotation that did not finish (after a crash: the leader calls this for a row left
   * `generating`): the key it made, if any, is deleted (its answer was never sent, so nobody holds
   * it), the old key gets its alias back, and the row is dropped. When LiteLLM cannot be reached
   * the row stays, for the leader to try again.
   */
  async recover(r: RotationRow): Promise<void> {
    await this.undo(r, { touched: true, abandoned: true });
  }

  /**
   * `touched`: LiteLLM may have renamed the old key and made a new one (an answer may have been
   * lost), so the key this rotation made (found by its tag) is deleted and the old key gets its alias back.
   */
  private async undo(r: RotationRow, what: { touched: boolean; newToken?: string; abandoned?: boolean }): Promise<void> {
    if (what.touched) {
      try {
        await this.deps.litellm.run(async (l) => {
          const orphans = new Set(what.newToken ? [what.newToken] : []);
          for (let page = 1, pages = 1; page <= pages; page++) {
            const p = await l.listKeys({ page, size: 100, keyAlias: r.alias });
            pages = p.totalPages;
            for (const k of p.keys) if (k.token && k.token !== r.old_token && k.metadata[OP_FIELD] === rotationOp(r.id)) orphans.add(k.token);
          }
          if (orphans.size) await l.deleteKeys([...orphans]).catch(notFoundIsFine);
          await l.updateKey(r.old_token, { key_alias: r.alias }).catch(notFoundIsFine);
        });
      } catch (err) {
        this.deps.log.warn('virtual key rotation: could not undo it in LiteLLM; the leader tries again', { alias: r.alias, rotation_id: r.id, err });
        return;
      }
    }
    await withTransaction(this.deps.pool, async (c) => {
      await this.store.dropRotation(c, r.id);
      if (what.abandoned) {
        await appendAudit(c, { actor: 'keyplane', action: 'virtual_key.rotation_abandoned', target: `virtual_key/${r.alias}`, details: { rotation_id: r.id, old_token: r.old_token, note: 'left unfinished when keyplane stopped; undone' } });
      }
    });
  }

  private async replay(key: string, digest: string): Promise<RotateResult | undefined> {
    const prior = await this.store.byIdempotencyKey(key);
    if (!prior) return undefined;
    if (prior.request_digest !== digest) throw new IdempotencyKeyReused(key, prior);
    if (prior.status === 'generating') {
      throw new AppError(409, 'rotation-in-progress', 'Rotation in progress', `rotation ${prior.id} with Idempotency-Key ${key} is still under way; send the request again in a moment`, { rotation_id: prior.id });
    }
    const cur = await this.store.get(prior.alias);
    return { key: null, view: cur ? (await this.deps.keys.views([cur]))[0] : undefined, rotation: rotationView(prior), replayed: true };
  }
}

function notFoundIsFine(err: unknown): void {
  if (err instanceof LitellmApiError && err.status === 404) return;
  throw err;
}

export function rotationView(r: RotationRow): RotationView {
  return {
    rotation_id: r.id,
    alias: r.alias,
    status: r.status,
    grace_period: formatDuration(r.grace_ms),
    old_token: r.old_token,
    old_masked_key: r.old_masked_key,
    new_token: r.new_token,
    new_masked_key: r.new_masked_key,
    delete_at: r.delete_at ? r.delete_at.toISOString() : null,
    deleted_at: r.deleted_at ? r.deleted_at.toISOString() : null,
    attempts: r.attempts,
    last_error: r.last_error,
    note: r.note,
    created_by: r.created_by,
    created_at: r.created_at.toISOString(),
  };
}

/**
 * What a client that lost the first answer needs to know: the key was shown once and is not kept;
 * nobody holds it if that answer was lost, so rotating again is the way out, and the key before it
 * still works until its deadline.
 */
export function replayMessage(r: RotationView): string {
  const before = r.old_masked_key ?? `the key with token ${r.old_token}`;
  const until = r.status === 'done' ? `was deleted at ${r.deleted_at}` : `stays valid until ${r.delete_at}`;
  return (
    `this request was answered before (rotation ${r.rotation_id} at ${r.created_at}): the key it made (${r.new_masked_key ?? r.new_token}) was shown once, in that answer, ` +
    `and keyplane does not keep it. If that answer was lost, nobody holds that key: rotate again with a new Idempotency-Key (grace_period "0s" deletes the lost key at once). ` +
    `The key before it (${before}) ${until}.`
  );
}
