import type { Reloader, ReloadRequest, ReloadResult } from './reloader';

/** `KEYPLANE_RELOAD=none`: files only; whoever runs LiteLLM restarts it. */
export class NoneReloader implements Reloader {
  readonly kind = 'none' as const;

  async reload(_req: ReloadRequest): Promise<ReloadResult> {
    const now = new Date();
    return { status: 'skipped', targets: [{ target: 'none', status: 'skipped', startedAt: now, finishedAt: now }] };
  }
}
