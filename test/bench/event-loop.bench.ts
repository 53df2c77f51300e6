import { execFile } from 'node:child_process';
import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks';
import { promisify } from 'node:util';
import { startBenchKeyplane, type BenchEnv } from './bench-env';

/**
 * `npm run bench:eventloop`: how long the event loop (the one that answers HTTP) is blocked at a
 * time while keyplane does its heaviest sync work. Goal: no turn longer than 50 ms. On a loaded
 * machine the delay also counts time the thread waited for a CPU; `main_busy_ms` is the main
 * thread's own work over the whole measure (an upper bound for any one turn).
 * 1. a render-check-write of 5,000 deployments from Postgres (a change to one of them);
 * 2. GET /sync/preview of those 5,000 deployments (render, mask, diff against the files on disk);
 * 3. GET /sync/preview over 15 models holding 60,000-character strings (once 53 s of blocking).
 */
const DEPLOYMENTS = 5000;
const GOAL_MS = 50;

const round = (x: number): number => Math.round(x * 10) / 10;

async function measure(name: string, work: () => Promise<unknown>): Promise<Record<string, number | string>> {
  const h: IntervalHistogram = monitorEventLoopDelay({ resolution: 1 });
  h.enable();
  const t0 = performance.now();
  const elu0 = performance.eventLoopUtilization();
  await work();
  const busy = performance.eventLoopUtilization(elu0);
  const wallMs = performance.now() - t0;
  h.disable();
  const max = h.max / 1e6;
  return {
    measure: name,
    wall_ms: Math.round(wallMs),
    // Time the main thread was busy (not waiting for I/O or the worker) over the whole measure.
    main_busy_ms: Math.round(busy.active),
    loop_delay_p99_ms: round(h.percentile(99) / 1e6),
    loop_delay_max_ms: round(max),
    goal: `max <= ${GOAL_MS} ms`,
    met: max <= GOAL_MS ? 'yes' : 'NO',
  };
}

/**
 * GET /sync/preview from another process: an in-process client would parse the megabytes of the
 * answer on the very event loop being measured.
 */
async function preview(env: BenchEnv): Promise<void> {
  const client = `fetch(process.argv[1], { headers: { authorization: 'Bearer ' + process.argv[2] } }).then(async (r) => { await r.arrayBuffer(); if (r.status !== 200) throw new Error('preview answered ' + r.status); })`;
  await promisify(execFile)(process.execPath, ['-e', client, `${env.kp.url}/api/v1/admin/sync/preview`, env.token]);
}

async function main(): Promise<void> {
  const env = await startBenchKeyplane({ KEYPLANE_SYNC_WAIT: '0ms' });
  const rows: Array<Record<string, number | string>> = [];
  try {
    const sync = env.kp.sync!;
    const headers = { authorization: `Bearer ${env.token}`, 'content-type': 'application/json' };
    const put = await fetch(`${env.kp.url}/api/v1/admin/platform-keys/openrouter`, { method: 'PUT', headers, body: JSON.stringify({ api_key: 'sk-or-v1-bench-0000000000' }) });
    if (put.status !== 200) throw new Error(`PUT answered ${put.status}`);
    const loaded = sync.events.waitFor('render:done', (r) => r.deployments === DEPLOYMENTS, 120_000);
    await env.kp.pool.query(
      `INSERT INTO models (id, model_name, provider, model, rpm, litellm_params, model_info)
       SELECT gen_random_uuid(), 'group-' || (i % 500), 'openrouter', 'vendor/model-' || i, 100, '{"timeout": 30}', '{"mode": "chat"}'
       FROM generate_series(1, $1) AS i`,
      [DEPLOYMENTS],
    );
    await loaded;
    await sync.syncer.syncNow();

    for (let i = 0; i < 3; i++) {
      rows.push(
        await measure(`render-check-write of ${DEPLOYMENTS} deployments (run ${i + 1})`, async () => {
          const done = sync.events.waitFor('render:done', (r) => r.changed, 120_000);
          await env.kp.pool.query(`UPDATE models SET rpm = rpm + 1 WHERE id = (SELECT id FROM models ORDER BY id LIMIT 1)`);
          await done;
        }),
      );
    }
    // A diff against the files on disk: make the files differ from what a render would write.
    await env.kp.pool.query(`UPDATE models SET rpm = rpm + 1 WHERE id IN (SELECT id FROM models ORDER BY id LIMIT 50)`);
    rows.push(await measure(`GET /sync/preview of ${DEPLOYMENTS} deployments`, () => preview(env)));

    await env.kp.pool.query(`DELETE FROM models`);
    await env.kp.pool.query(
      `INSERT INTO models (id, model_name, provider, model, model_info)
       SELECT gen_random_uuid(), 'long-' || i, 'openrouter', 'vendor/long', jsonb_build_object('description', repeat('a', 60000) || i)
       FROM generate_series(1, 15) AS i`,
    );
    await sync.syncer.syncNow();
    rows.push(await measure('GET /sync/preview of 15 models of 60,000-character strings', () => preview(env)));
  } finally {
    await env.close();
  }
  console.log('bench:eventloop — event-loop delay during heavy sync work');
  console.table(rows);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
