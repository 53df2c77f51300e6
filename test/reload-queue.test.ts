import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { createLogger, SecretRegistry } from '../src/log';
import { SafeEmitter } from '../src/events';
import type { AlertEvent, Alerter } from '../src/alerts/alerter';
import { NoneReloader } from '../src/reload/none';
import { ReloadQueue, type ReloadEvents } from '../src/reload/reload-queue';
import type { Reloader, ReloadRequest, ReloadResult } from '../src/reload/reloader';
import { createTestDatabase, type TestDatabase } from './helpers/db';
import { envFileText, RevisionFiles } from './helpers/reload';

const SECRET = 'sk-or-v1-secret-value-123456';

let db: TestDatabase;
let dir: string;
let files: RevisionFiles;

beforeAll(async () => {
  db = await createTestDatabase();
  dir = mkdtempSync(path.join(os.tmpdir(), 'kp-reload-queue-'));
  files = await RevisionFiles.create(dir);
});

afterAll(async () => {
  await db.drop();
  rmSync(dir, { recursive: true, force: true });
});

beforeEach(async () => {
  await db.pool.query('DELETE FROM reload_runs');
});

function capture(): { log: ReturnType<typeof createLogger>; lines: () => Array<Record<string, unknown>>; text: () => string } {
  const stream = new PassThrough();
  let text = '';
  stream.on('data', (c: Buffer) => (text += c.toString('utf8')));
  const log = createLogger({ secrets: new SecretRegistry(), json: true, stream, level: 'debug' });
  return { log, text: () => text, lines: () => text.split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>) };
}

/** A reloader scripted per call; it records how many calls overlap. */
class ScriptedReloader implements Reloader {
  readonly kind = 'command' as const;
  calls: number[] = [];
  active = 0;
  maxActive = 0;
  private gates: Array<() => void> = [];

  constructor(private readonly script: (req: ReloadRequest, call: number) => Promise<ReloadResult>) {}

  /** Makes the next calls wait until `release()`. */
  hold = false;

  release(): void {
    for (const g of this.gates.splice(0)) g();
  }

  async reload(req: ReloadRequest): Promise<ReloadResult> {
    this.calls.push(req.revision);
    this.active++;
    this.maxActive = Math.max(this.maxActive, this.active);
    try {
      if (this.hold) await new Promise<void>((r) => this.gates.push(r));
      return await this.script(req, this.calls.length);
    } finally {
      this.active--;
    }
  }
}

const ok = (): ReloadResult => ({ status: 'ok', targets: [{ target: 'command', status: 'ok', startedAt: new Date(), finishedAt: new Date() }] });
const failed = (error: string): ReloadResult => ({ status: 'failed', error, targets: [{ target: 'command', status: 'failed', startedAt: new Date(), finishedAt: new Date(), error }] });

function setup(reloader: Reloader, extra: { alerter?: Alerter; attempts?: number; backoffMs?: number } = {}) {
  const cap = capture();
  const events = new SafeEmitter<ReloadEvents>();
  const alerts: Array<Omit<AlertEvent, 'at' | 'instance'>> = [];
  const queue = new ReloadQueue({
    reloader,
    pool: db.pool,
    log: cap.log,
    alerter: extra.alerter ?? { send: async (e) => void alerts.push(e) },
    emitter: events,
    backoffMs: extra.backoffMs ?? 5,
    attempts: extra.attempts,
  });
  return { queue, events, alerts, ...cap };
}

describe('ReloadQueue', () => {
  it('never runs two reloads at once and coalesces the revisions that arrive meanwhile', async () => {
    const r = new ScriptedReloader(async () => ok());
    const { queue, events } = setup(r);
    r.hold = true;
    const started1 = events.waitFor('reload:started', (e) => e.revision === 1);
    queue.submit(await files.write(1, { OPENROUTER_API_KEY: 'sk-a-00000001' }));
    await started1;
    queue.submit(await files.write(2, { OPENROUTER_API_KEY: 'sk-a-00000002' }));
    queue.submit(await files.write(3, { OPENROUTER_API_KEY: 'sk-a-00000003' }));
    expect((await queue.status()).pending).toEqual({ revision: 3 });
    expect((await queue.status()).running).toMatchObject({ revision: 1, attempt: 1 });
    r.hold = false;
    const done3 = events.waitFor('reload:done', (e) => e.revision === 3);
    r.release();
    await done3;
    await queue.whenIdle();
    expect(r.calls).toEqual([1, 3]);
    expect(r.maxActive).toBe(1);
    const { rows } = await db.pool.query('SELECT revision, attempt, status FROM reload_runs ORDER BY id');
    expect(rows).toEqual([
      { revision: 1, attempt: 1, status: 'ok' },
      { revision: 3, attempt: 1, status: 'ok' },
    ]);
    const status = await queue.status();
    expect(status).toMatchObject({ reloader: 'command', running: null, pending: null, last: { revision: 3, status: 'ok' } });
    await queue.stop();
  });

  it('runs a revision submitted at any moment around the end of the previous one', async () => {
    const r = new ScriptedReloader(async () => ok());
    const { queue, events } = setup(r);
    // Submit the next revision at every point in the microtask sequence after reload:done.
    for (let delay = 0; delay < 6; delay++) {
      const rev = 100 + delay;
      const next = await files.write(rev + 50, { OPENROUTER_API_KEY: `sk-z-${String(rev).padStart(8, '0')}` });
      const after = events.waitFor('reload:done', (e) => e.revision === rev);
      const followed = events.waitFor('reload:done', (e) => e.revision === rev + 50, 5000);
      events.once('reload:done', () => {
        let p = Promise.resolve();
        for (let i = 0; i < delay; i++) p = p.then(() => undefined);
        void p.then(() => queue.submit(next));
      });
      queue.submit(await files.write(rev, { OPENROUTER_API_KEY: `sk-y-${String(rev).padStart(8, '0')}` }));
      await after;
      await followed;
      await queue.whenIdle();
    }
    expect(r.calls).toEqual([100, 150, 101, 151, 102, 152, 103, 153, 104, 154, 105, 155]);
    await queue.stop();
  });

  it('retries a failed reload with backoff and records every try', async () => {
    const r = new ScriptedReloader(async (_req, call) => (call < 3 ? failed(`boom ${call}`) : ok()));
    const { queue, events, alerts } = setup(r);
    const retries: Array<ReloadEvents['reload:retry']> = [];
    events.on('reload:retry', (e) => retries.push(e));
    const done = events.waitFor('reload:done', (e) => e.revision === 10);
    queue.submit(await files.write(10, { OPENROUTER_API_KEY: 'sk-b-00000010' }));
    expect((await done).attempts).toBe(3);
    expect(retries.map((x) => [x.attempt, x.error])).toEqual([
      [1, 'boom 1'],
      [2, 'boom 2'],
    ]);
    // Jittered exponential: the second pause is drawn from twice the range of the first.
    expect(retries[0]!.delayMs).toBeGreaterThanOrEqual(2);
    expect(retries[0]!.delayMs).toBeLessThanOrEqual(5);
    expect(retries[1]!.delayMs).toBeGreaterThanOrEqual(5);
    expect(retries[1]!.delayMs).toBeLessThanOrEqual(10);
    const { rows } = await db.pool.query(
      `SELECT r.attempt, r.status, r.error, t.target, t.status AS target_status FROM reload_runs r JOIN reload_run_targets t ON t.run_id = r.id
       WHERE r.revision = 10 ORDER BY r.id`,
    );
    expect(rows).toEqual([
      { attempt: 1, status: 'failed', error: 'boom 1', target: 'command', target_status: 'failed' },
      { attempt: 2, status: 'failed', error: 'boom 2', target: 'command', target_status: 'failed' },
      { attempt: 3, status: 'ok', error: null, target: 'command', target_status: 'ok' },
    ]);
    expect(alerts).toEqual([]);
    await queue.stop();
  });

  it('after the last try logs an ERROR and alerts once, with every secret masked', async () => {
    // A reloader that echoes the key in its error, as a careless command's stderr might.
    const r = new ScriptedReloader(async (req) => failed(`rejected key ${req.env.OPENROUTER_API_KEY}`));
    const { queue, events, alerts, lines, text } = setup(r);
    const failedEv = events.waitFor('reload:failed', (e) => e.revision === 20);
    queue.submit(await files.write(20, { OPENROUTER_API_KEY: SECRET }));
    const ev = await failedEv;
    expect(ev).toMatchObject({ attempts: 3, superseded: false });
    expect(ev.result.error).toBe('rejected key [REDACTED]');
    expect(alerts).toEqual([
      {
        type: 'reload.failed',
        revision: 20,
        reloader: 'command',
        attempts: 3,
        error: 'rejected key [REDACTED]',
        targets: [{ target: 'command', status: 'failed', error: 'rejected key [REDACTED]' }],
      },
    ]);
    const errors = lines().filter((l) => l.level === 'error');
    expect(errors).toEqual([expect.objectContaining({ message: 'reload failed; LiteLLM may still serve the previous keys', revision: 20, attempts: 3 })]);
    const status = await queue.status();
    expect(status.last).toMatchObject({ revision: 20, attempt: 3, status: 'failed', error: 'rejected key [REDACTED]' });
    expect(text()).not.toContain(SECRET);
    expect(JSON.stringify(status)).not.toContain(SECRET);
    const { rows } = await db.pool.query("SELECT count(*)::int AS n FROM reload_runs WHERE error LIKE '%' || $1 || '%'", [SECRET]);
    expect(rows[0].n).toBe(0);
    await queue.stop();
  });

  it('stops retrying a revision that a newer one supersedes, without an alert', async () => {
    let submitNewer: (() => Promise<void>) | undefined;
    const r = new ScriptedReloader(async (req) => {
      if (req.revision === 30) {
        await submitNewer?.();
        submitNewer = undefined;
        return failed('old revision failed');
      }
      return ok();
    });
    const { queue, events, alerts } = setup(r, { backoffMs: 60_000 });
    submitNewer = async () => queue.submit(await files.write(31, { OPENROUTER_API_KEY: 'sk-c-00000031' }));
    const failed30 = events.waitFor('reload:failed', (e) => e.revision === 30);
    const done31 = events.waitFor('reload:done', (e) => e.revision === 31);
    queue.submit(await files.write(30, { OPENROUTER_API_KEY: 'sk-c-00000030' }));
    expect(await failed30).toMatchObject({ attempts: 1, superseded: true });
    await done31;
    expect(r.calls).toEqual([30, 31]);
    expect(alerts).toEqual([]);
    await queue.stop();
  });

  it('cuts a backoff short when a newer revision arrives during it', async () => {
    const r = new ScriptedReloader(async (req) => (req.revision === 40 ? failed('nope') : ok()));
    const { queue, events, alerts } = setup(r, { backoffMs: 60_000 });
    const retry = events.waitFor('reload:retry', (e) => e.revision === 40);
    queue.submit(await files.write(40, { OPENROUTER_API_KEY: 'sk-d-00000040' }));
    await retry;
    const done41 = events.waitFor('reload:done', (e) => e.revision === 41);
    queue.submit(await files.write(41, { OPENROUTER_API_KEY: 'sk-d-00000041' }));
    await done41;
    expect(r.calls).toEqual([40, 41]);
    expect(alerts).toEqual([]);
    await queue.stop();
  });

  it('re-applies the revision files before a retry when a try rolled them back', async () => {
    // The reloader only records; a failing expect inside it would be swallowed as a failed try and retried.
    const seen: string[] = [];
    const restored: boolean[] = [];
    const afterRestore: string[] = [];
    const r = new ScriptedReloader(async (req, call) => {
      seen.push(readFileSync(req.envPath, 'utf8'));
      if (call === 1) {
        restored.push(await req.restorePrevious());
        afterRestore.push(readFileSync(req.envPath, 'utf8'));
        return failed('rolled back');
      }
      return ok();
    });
    const { queue, events } = setup(r);
    await files.write(50, { OPENROUTER_API_KEY: 'sk-e-00000050' });
    const done = events.waitFor('reload:done', (e) => e.revision === 51);
    queue.submit(await files.write(51, { OPENROUTER_API_KEY: 'sk-e-00000051' }));
    expect((await done).attempts).toBe(2);
    const mine = envFileText({ OPENROUTER_API_KEY: 'sk-e-00000051' });
    expect(restored).toEqual([true]);
    expect(afterRestore).toEqual([envFileText({ OPENROUTER_API_KEY: 'sk-e-00000050' })]);
    expect(seen).toEqual([mine, mine]);
    expect(readFileSync(path.join(dir, 'litellm.env'), 'utf8')).toBe(mine);
    await queue.stop();
  });

  it('records a reloader that throws as a failed try and keeps going', async () => {
    const r = new ScriptedReloader(async (_req, call) => {
      if (call === 1) throw new Error('unexpected');
      return ok();
    });
    const { queue, events } = setup(r);
    const done = events.waitFor('reload:done', (e) => e.revision === 60);
    queue.submit(await files.write(60, { OPENROUTER_API_KEY: 'sk-f-00000060' }));
    expect((await done).attempts).toBe(2);
    const { rows } = await db.pool.query(
      'SELECT r.status, r.error, t.target FROM reload_runs r JOIN reload_run_targets t ON t.run_id = r.id WHERE r.revision = 60 ORDER BY r.id',
    );
    expect(rows[0]).toEqual({ status: 'failed', error: 'reloader command threw: unexpected', target: 'command' });
    await queue.stop();
  });

  it('survives an alerter that fails', async () => {
    const r = new ScriptedReloader(async () => failed('down'));
    const { queue, events, lines } = setup(r, { attempts: 1, alerter: { send: async () => Promise.reject(new Error('webhook down')) } });
    const failedEv = events.waitFor('reload:failed', (e) => e.revision === 70);
    queue.submit(await files.write(70, { OPENROUTER_API_KEY: 'sk-g-00000070' }));
    await failedEv;
    await queue.whenIdle();
    expect(lines().some((l) => l.message === 'could not send the reload alert')).toBe(true);
    await queue.stop();
  });

  it('takes the latest submission even with a lower revision number, and nothing after stop()', async () => {
    const r = new ScriptedReloader(async () => ok());
    const { queue, events } = setup(r);
    const done = events.waitFor('reload:done', (e) => e.revision === 81);
    queue.submit(await files.write(81, { OPENROUTER_API_KEY: 'sk-h-00000081' }));
    await done;
    // The syncer hands over revision 0 when it wrote files but could not record a revision.
    queue.submit(await files.write(0, { OPENROUTER_API_KEY: 'sk-h-00000000' }));
    await queue.whenIdle();
    expect(r.calls).toEqual([81, 0]);

    r.hold = true;
    const started = events.waitFor('reload:started', (e) => e.revision === 82);
    queue.submit(await files.write(82, { OPENROUTER_API_KEY: 'sk-h-00000082' }));
    await started;
    queue.submit(await files.write(83, { OPENROUTER_API_KEY: 'sk-h-00000083' }));
    // stop() waits for the try in progress, and drops what waits.
    let stopped = false;
    const stopping = queue.stop().then(() => (stopped = true));
    await new Promise((r2) => setImmediate(r2));
    expect(stopped).toBe(false);
    r.release();
    await stopping;
    queue.submit(await files.write(84, { OPENROUTER_API_KEY: 'sk-h-00000084' }));
    await queue.whenIdle();
    expect(r.calls).toEqual([81, 0, 82]);
  });

  it('records the none reloader as skipped', async () => {
    const { queue, events } = setup(new NoneReloader());
    const done = events.waitFor('reload:done', (e) => e.revision === 90);
    queue.submit(await files.write(90, { OPENROUTER_API_KEY: 'sk-i-00000090' }));
    expect((await done).result.status).toBe('skipped');
    expect((await queue.status()).last).toMatchObject({ revision: 90, reloader: 'none', status: 'skipped', targets: [expect.objectContaining({ target: 'none', status: 'skipped' })] });
    await queue.stop();
  });
});
