import type { Pool } from '../db/pool';
import { readLeader, type LeaderInfo } from './leader';
import { sha256 } from './renderer';
import type { SyncStore } from './sync-store';
import { CONFIG_FILE, ENV_FILE, type AtomicWriter } from './writer';

export interface SyncStatusParts {
  pool: Pool;
  store: SyncStore;
  writer: AtomicWriter;
  instanceId: string;
  leadsHere: boolean;
  /** Nudges waiting for quiescence. */
  pending: { count: number; since: number | null };
  rendering: boolean;
  /** Keyed digest for litellm.env (never a plain hash of its secrets). */
  digest: (text: string) => string;
  /** The reload queue's status, or an error fit to show. */
  reloadStatus: () => Promise<unknown>;
}

function leaderView(leader: LeaderInfo, instance: string, leadsHere: boolean): Record<string, unknown> {
  return {
    instance: leader.instance ?? (leadsHere ? instance : null),
    since: leader.since ? leader.since.toISOString() : null,
    this_instance: leadsHere,
  };
}

/** GET /api/v1/admin/sync: revision, hashes on disk, who leads, the last render and reload, what is pending. */
export async function syncStatus(p: SyncStatusParts): Promise<Record<string, unknown>> {
  const [leader, revision, s, lastReload] = await Promise.all([readLeader(p.pool), p.store.latestRevision(), p.store.statusRow(), p.reloadStatus()]);
  const files: Record<string, unknown> = {};
  for (const name of [CONFIG_FILE, ENV_FILE]) {
    const bytes = await p.writer.read(name);
    const text = bytes?.toString('utf8');
    files[name] =
      name === ENV_FILE
        ? { path: p.writer.path(name), exists: bytes !== null, digest: text === undefined ? null : p.digest(text) }
        : { path: p.writer.path(name), exists: bytes !== null, sha256: text === undefined ? null : sha256(text) };
  }
  const wanted = Number(s.reload_wanted ?? 0);
  const skipped = (s.skipped ?? []) as Array<{ provider?: string; model_name?: string; reason?: string }>;
  // The loud case first: providers with every key of their pool out, and the models nobody serves now.
  const outOfKeys = new Map<string, Set<string>>();
  for (const d of skipped) {
    if (d.reason !== 'no_key_in_service' || !d.provider) continue;
    const models = outOfKeys.get(d.provider) ?? new Set<string>();
    if (d.model_name) models.add(d.model_name);
    outOfKeys.set(d.provider, models);
  }
  return {
    ...(outOfKeys.size
      ? {
          alert: `${outOfKeys.size} provider(s) have no key in service; their models are not served: ${[...outOfKeys.keys()].sort().join(', ')}`,
          providers_without_keys: [...outOfKeys.entries()].sort(([a], [b]) => (a < b ? -1 : 1)).map(([provider, models]) => ({ provider, models: [...models].sort() })),
        }
      : {}),
    instance: p.instanceId,
    leader: leaderView(leader, p.instanceId, p.leadsHere),
    revision: revision ?? null,
    files,
    last_render: s.last_status
      ? {
          status: s.last_status,
          trigger: s.last_trigger,
          at: (s.last_attempt_at as Date).toISOString(),
          duration_ms: s.last_duration_ms === null ? null : Math.round(Number(s.last_duration_ms) * 10) / 10,
          error: s.last_error ?? null,
        }
      : null,
    skipped,
    warnings: s.warnings ?? [],
    pending: {
      changes: p.pending.count,
      since: p.pending.since ? new Date(p.pending.since).toISOString() : null,
      rendering: p.rendering,
      // A reload wished for (by a render that changed the files) and not finished yet.
      reload: wanted > Number(s.reload_done ?? 0) ? { generation: wanted, since: s.reload_wanted_at ? (s.reload_wanted_at as Date).toISOString() : null } : null,
    },
    last_reload: lastReload ?? null,
  };
}
