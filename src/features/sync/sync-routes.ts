import type { Request } from 'express';
import { z } from 'zod';
import { withTransaction, type Pool } from '../../db/pool';
import { AppError } from '../../http/errors';
import type { RouteTable } from '../../http/route-table';
import { parse, queryInt } from '../../http/validate';
import { cursorParam, encodeCursor, limitParam } from '../../http/paging';
import { ValidationFailed } from '../../http/errors';
import { claimForcedReload } from '../../sync/sync-store';
import { roleAtLeast } from '../../http/principal';
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
  limit: limitParam(),
  cursor: cursorParam(z.number().int().positive()).optional(),
  // The older way to page, kept: ?before=<revision> with next_before.
  before: queryInt(1, Number.MAX_SAFE_INTEGER, 'must be a revision number').optional(),
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
      429: "An operator's forced reload less than 30 s after the last one (Retry-After says when); admins are not limited",
      503: 'The desired state could not be read',
    },
    handler: async (req: Request, res, ctx) => {
      const body = parse(syncBody, req.body ?? {});
      await withTransaction(deps.pool, async (c) => {
        // An operator could otherwise keep LiteLLM restarting; an admin at 3 a.m. is not held back.
        if (body.force_reload && !roleAtLeast(ctx.principal.role, 'admin')) {
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
    summary: 'Revisions, newest first; paged (?limit=1..1000, ?cursor=, or ?before=<revision> with next_before)',
    query: revisionsQuery,
    handler: async (_req, _res, _ctx, q) => {
      if (q.cursor !== undefined && q.before !== undefined) throw new ValidationFailed([{ field: 'query.before', rule: 'must not be given with cursor' }]);
      const rows = await syncer.revisions({ limit: q.limit + 1, before: q.cursor ?? q.before });
      const items = rows.slice(0, q.limit);
      const last = rows.length > q.limit ? items[items.length - 1]!.revision : null;
      return { items, next_cursor: last === null ? null : encodeCursor(last), next_before: last };
    },
  });
}
