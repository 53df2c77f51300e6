import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import client from 'prom-client';
import { loadSettings } from '../src/config';
import { SafeEmitter } from '../src/events';
import type { PlatformKeysService } from '../src/features/platform-keys/platform-keys-service';
import { loadDesiredState } from '../src/sync/desired-state';
import { LeaderElector } from '../src/sync/leader';
import type { SyncEvents } from '../src/sync/sync-events';
import { LeaderBusyError, renderOnce, type RenderOnceDeps } from '../src/sync/render-once';
import { Syncer, syncerOptions } from '../src/sync/syncer';
import { createTestDatabase, type TestDatabase } from './helpers/db';
import { captureLog, envLine, keyService, keyValue, TEST_CTX } from './helpers/sync';

describe('keyplane render [--dry-run]', () => {
  let db: TestDatabase;
  let keys: PlatformKeysService;
  let dir: string;
  let deps: RenderOnceDeps;
  const logs = captureLog();
  const value = keyValue('sk-cli');

  beforeAll(async () => {
    db = await createTestDatabase();
    keys = keyService(db.pool, logs.secrets);
    await keys.put('openai', { api_key: value }, TEST_CTX);
    dir = path.join(mkdtempSync(path.join(os.tmpdir(), 'kp-cli-')), 'out');
    deps = {
      pool: db.pool,
      loadState: () => loadDesiredState(db.pool, keys),
      log: logs.log,
      secrets: logs.secrets,
      settings: loadSettings({ KEYPLANE_OUTPUT_DIR: dir, KEYPLANE_INSTANCE_ID: 'cli-test' }),
    };
  });
  afterAll(async () => {
    rmSync(path.dirname(dir), { recursive: true, force: true });
    await db.drop();
  });

  it('--dry-run shows what would be written, masked, and writes nothing', async () => {
    const out = await renderOnce(deps, { dryRun: true });
    if (!out.dryRun) throw new Error('expected a dry run');
    expect(out.preview.changed).toEqual({ 'config.yaml': true, 'litellm.env': true });
    expect(out.preview.env).toContain(`OPENAI_API_KEY=****${value.slice(-4)}`);
    expect(JSON.stringify(out.preview)).not.toContain(value);
    expect(out.preview.diff['litellm.env']).toContain(`+OPENAI_API_KEY=****${value.slice(-4)}`);
    expect(existsSync(dir)).toBe(false);
  });

  it('renders once and records a cli revision; again, nothing changes', async () => {
    const first = await renderOnce(deps, { dryRun: false });
    expect(first).toMatchObject({ dryRun: false, outcome: { status: 'changed', result: { trigger: 'cli', revision: 1, changedKeys: ['openai'] } } });
    expect(envLine(readFileSync(path.join(dir, 'litellm.env'), 'utf8'), 'OPENAI_API_KEY')).toBe(value);
    const again = await renderOnce(deps, { dryRun: false });
    expect(again).toMatchObject({ dryRun: false, outcome: { status: 'unchanged' } });
  });

  it('is refused while a serving instance leads, naming it', async () => {
    const leader = new LeaderElector({ connectionString: db.url, instanceId: 'serving-1', log: logs.log, events: new SafeEmitter<SyncEvents>() });
    await leader.start();
    try {
      expect(leader.isLeader).toBe(true);
      await expect(renderOnce(deps, { dryRun: false })).rejects.toThrow(new LeaderBusyError('serving-1'));
      expect((await renderOnce(deps, { dryRun: true })).dryRun).toBe(true);
    } finally {
      await leader.stop();
    }
    expect((await renderOnce(deps, { dryRun: false })).dryRun).toBe(false);
  });

  it('exports render counts, duration and revision on the registry it is given', async () => {
    const registry = new client.Registry();
    const syncer = new Syncer(syncerOptions(deps.settings, { ...deps, events: new SafeEmitter<SyncEvents>(), registry }));
    await syncer.prepare();
    await keys.put('openai', { api_key: keyValue('sk-metrics') }, TEST_CTX);
    expect((await syncer.request('manual')).status).toBe('changed');
    expect((await syncer.request('manual')).status).toBe('unchanged');
    const text = await registry.metrics();
    expect(text).toContain('keyplane_sync_renders_total{status="changed"} 1');
    expect(text).toContain('keyplane_sync_renders_total{status="unchanged"} 1');
    expect(text).toMatch(/keyplane_sync_revision \d+/);
    expect(text).toContain('keyplane_sync_render_duration_seconds_count 2');
  });
});
