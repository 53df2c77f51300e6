import type { Request } from 'express';
import { z } from 'zod';
import { withTransaction, type Pool } from '../../db/pool';
import { AppError } from '../../http/errors';
import type { RouteTable } from '../../http/route-table';
import { parse } from '../../http/validate';
import { claimForcedReload } from '../../sync/sync-store';
import type { SyncOutcome, Syncer } from '../../sync/syncer';
import { appendAudit } from '../audit/audit-store';

export interface SyncRouteDeps {
  syncer: Syncer;
  pool: Pool;
  /** Whether this instance leads; a follower forwards POST /sync to the leader. */
  isLeader: () => boolean;
  /** At most one `force_reload` per this many seconds, for the whole deployment (30). */
  forceReloadIntervalS?: number;
}

/** A forced reload restarts LiteLLM: they are rate limited, so that no operator can keep it restarting. */
class ForceReloadLimited extends AppError {
  constructor(readonly retryAfterSeconds: number, intervalS: number) {
    super(
      429,
      'force-reload-limited',
      'Too many forced reloads',
      `a forced reload restarts LiteLLM, so one is allowed every ${intervalS} s for the whole deployment; retry after ${retryAfterSeconds} s (a render without force_reload is not limited)`,
    );
  }
}

const syncBody = z.strictObject({
  force_reload: z.boolean({ error: 'must be true or false' }).optional(),
});

const revisionsQuery = z.strictObject({
  limit: z.coerce.number({ error: 'must be a number' }).int().min(1, { error: 'must be 1 to 500' }).max(500, { error: 'must be 1 to 500' }).default(50),
  before: z.coerce.number({ error: 'must be a number' }).int().positive({ error: 'must be a revision number' }).optional(),
});

function outcomeView(o: Exclude<SyncOutcome, { status: 'failed' }>): Record<string, unknown> {
  if (o.status === 'skipped') return { status: 'skipped', reason: o.reason };
  const r = o.result;
  return {
    status: o.status,
    revision: r.revision,
    changed_files: r.changedFiles,
    changed_keys: r.changedKeys,
    config_sha256: r.configSha256,
    env_digest: r.envDigest,
    drift: r.drift,
    deployments: r.deployments,
    skipped: r.skipped,
    warnings: r.warnings,
    duration_ms: Math.round(r.durationMs * 10) / 10,
  };
}

export function registerSyncRoutes(table: RouteTable, deps: SyncRouteDeps): void {
  const { syncer } = deps;

  table.add({
    method: 'get',
    path: '/api/v1/admin/sync',
    access: 'viewer',
    tag: 'sync',
    summary: 'Sync status: revision, file hashes, leader, last render and reload, pending changes',
    handler: () => syncer.status(),
  });

  table.add({
    method: 'post',
    path: '/api/v1/admin/sync',
    access: 'operator',
    tag: 'sync',
    summary: 'Render now (and reload when a file changed, or always with force_reload)',
    body: syncBody,
    responses: {
      202: 'Forwarded to the leading instance',
      422: 'The render failed; the live files are unchanged',
      429: 'A forced reload was asked for less than 30 s after the last one (Retry-After says when)',
      503: 'The desired state could not be read',
    },
    handler: async (req: Request, res, ctx) => {
      const body = parse(syncBody, req.body ?? {});
      await withTransaction(deps.pool, async (c) => {
        if (body.force_reload) {
          const intervalS = deps.forceReloadIntervalS ?? 30;
          const waitS = await claimForcedReload(c, intervalS);
          if (waitS > 0) throw new ForceReloadLimited(waitS, intervalS);
        }
        await appendAudit(c, { actor: ctx.principal.actor, action: 'sync.render', target: 'sync', requestId: ctx.requestId, details: { force_reload: body.force_reload ?? false } });
      });
      if (!deps.isLeader()) {
        await syncer.forwardToLeader({ forceReload: body.force_reload });
        res.status(202);
        return { status: 'forwarded', leader: (await syncer.status()).leader };
      }
      const outcome = await syncer.syncNow({ forceReload: body.force_reload });
      if (outcome.status === 'failed') {
        const f = outcome.failure;
        throw new AppError(f.stage === 'state' || f.stage === 'record' ? 503 : 422, 'render-failed', 'Render failed', `${f.stage}: ${f.message}; the live files are unchanged`, {
          stage: f.stage,
          ...(f.stderrTail !== undefined ? { stderr_tail: f.stderrTail } : {}),
        });
      }
      return outcomeView(outcome);
    },
  });

  table.add({
    method: 'get',
    path: '/api/v1/admin/sync/preview',
    access: 'viewer',
    tag: 'sync',
    summary: 'What a render would write now (env values masked) and the diff against the files on disk',
    handler: async () => {
      try {
        return await syncer.preview();
      } catch (err) {
        throw new AppError(422, 'render-failed', 'Render failed', (err as Error).message);
      }
    },
  });

  table.add({
    method: 'get',
    path: '/api/v1/admin/sync/revisions',
    access: 'viewer',
    tag: 'sync',
    summary: 'Revisions, newest first (?limit=1..500, ?before=<revision> for the next page)',
    handler: async (req: Request) => {
      const q = parse(revisionsQuery, { ...req.query }, 'query');
      const items = await syncer.revisions(q);
      const last = items[items.length - 1];
      return { items, next_before: items.length === q.limit && last ? last.revision : null };
    },
  });
}
