import { readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { PlatformKeysService } from '../src/features/platform-keys/platform-keys-service';
import { SafeEmitter } from '../src/events';
import { ReloadQueue, type ReloadEvents } from '../src/reload/reload-queue';
import type { Reloader, ReloadRequest, ReloadResult } from '../src/reload/reloader';
import { createTestDatabase, type TestDatabase } from './helpers/db';
import { captureLog, envLine, keyService, keyValue, syncInstance, TEST_CTX, type SyncInstance } from './helpers/sync';

/** Fails each revision's first try after putting the previous files back (as the Docker reloader does), then succeeds. */
class RollingBackReloader implements Reloader {
  readonly kind = 'command' as const;
  readonly envDuringRollback: string[] = [];
  private readonly tried = new Set<number>();

  async reload(req: ReloadRequest): Promise<ReloadResult> {
    const at = new Date();
    if (!this.tried.has(req.revision)) {
      this.tried.add(req.revision);
      if (await req.restorePrevious()) this.envDuringRollback.push(readFileSync(req.envPath, 'utf8'));
      return { status: 'failed', error: 'container did not come back; rolled back', targets: [] };
    }
    return { status: 'ok', targets: [{ target: 'command', status: 'ok', startedAt: at, finishedAt: at }] };
  }
}

/** Every file under `dir` (hidden, temp and backup files too), as text. */
function everyFile(dir: string): Array<{ name: string; text: string }> {
  return readdirSync(dir)
    .filter((f) => statSync(path.join(dir, f)).isFile())
    .map((name) => ({ name, text: readFileSync(path.join(dir, name), 'utf8') }));
}

describe('a revoked key value leaves the output directory', () => {
  let db: TestDatabase;
  let keys: PlatformKeysService;
  let inst: SyncInstance;
  let queue: ReloadQueue;
  const logs = captureLog();
  const events = new SafeEmitter<ReloadEvents>();
  const reloader = new RollingBackReloader();
  const stale = keyValue('sk-stale-bak');

  const holding = (value: string): string[] => everyFile(inst.dir).filter((f) => f.text.includes(value)).map((f) => f.name);

  async function reloaded(revision: number): Promise<void> {
    await events.waitFor('reload:done', (e) => e.revision === revision, 15_000);
    await queue.whenIdle();
  }

  beforeAll(async () => {
    db = await createTestDatabase();
    keys = keyService(db.pool, logs.secrets);
    queue = new ReloadQueue({ reloader, pool: db.pool, log: logs.log, alerter: { send: async () => undefined }, emitter: events, backoffMs: 5 });
    inst = syncInstance(db.url, db.pool, keys, { logs, reload: (req, wish) => queue.submit(req, wish) });
  });
  afterAll(async () => {
    await inst.runtime.stop();
    await queue.stop();
    await db.drop();
    rmSync(inst.dir, { recursive: true, force: true });
  });

  it('rotated and deleted keys are in no file after their render and the reload that follows, rollback included', async () => {
    const first = { openai: keyValue('sk-openai-v1'), groq: keyValue('gsk-groq-v1') };
    await keys.put('openai', { api_key: first.openai }, TEST_CTX);
    await keys.put('groq', { api_key: first.groq }, TEST_CTX);
    // What an earlier version left: a backup of the env file, holding a value revoked long ago.
    writeFileSync(path.join(inst.dir, 'litellm.env.bak'), `OPENAI_API_KEY=${stale}\n`, { mode: 0o600 });
    await inst.runtime.start();
    await reloaded(1);
    expect(holding(stale)).toEqual([]);

    const rotated = keyValue('sk-openai-v2');
    const rendered = inst.events.waitFor('render:done', (r) => r.changed);
    await keys.put('openai', { api_key: rotated }, TEST_CTX);
    await reloaded((await rendered).revision!);
    // The failed first try really put the old value back on disk for a while; the retry removed it.
    expect(reloader.envDuringRollback.some((text) => envLine(text, 'OPENAI_API_KEY') === first.openai)).toBe(true);
    expect(envLine(readFileSync(path.join(inst.dir, 'litellm.env'), 'utf8'), 'OPENAI_API_KEY')).toBe(rotated);
    expect(holding(first.openai)).toEqual([]);

    const deleted = inst.events.waitFor('render:done', (r) => r.changed);
    await keys.delete('groq', TEST_CTX);
    await reloaded((await deleted).revision!);
    expect(reloader.envDuringRollback.some((text) => envLine(text, 'GROQ_API_KEY') === first.groq)).toBe(true);
    expect(envLine(readFileSync(path.join(inst.dir, 'litellm.env'), 'utf8'), 'GROQ_API_KEY')).toBeUndefined();
    expect(holding(first.groq)).toEqual([]);
    for (const v of [stale, first.openai, first.groq]) expect(holding(v)).toEqual([]);
    // No backup of the env file, no temp file left (config.yaml changed once: it has no backup yet).
    expect(everyFile(inst.dir).map((f) => f.name).sort()).toEqual(['config.yaml', 'litellm.env']);
  });
});
