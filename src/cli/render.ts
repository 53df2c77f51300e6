import type { Keyplane } from '../main';
import { LeaderBusyError } from '../sync/render-once';
import { SYNC_CHANNEL } from '../sync/watcher';

const LEADER_WAIT_MS = 30_000;

/**
 * `keyplane render [--dry-run]`. Beside a serving instance that leads (it holds the render lock:
 * two writers must never race), the render is asked of that leader through the database, as a
 * follower instance does, and its outcome (sync_state) is awaited and shown.
 */
export async function render(kp: Keyplane, dryRun: boolean, out: (line: string) => void): Promise<number> {
  try {
    const r = await kp.renderOnce({ dryRun });
    out(JSON.stringify(r, null, 2));
    return 0;
  } catch (err) {
    if (!(err instanceof LeaderBusyError)) throw err;
  }
  const { pool } = kp;
  const { rows } = await pool.query<{ now: Date }>('SELECT clock_timestamp() AS now');
  const asked = rows[0]!.now;
  await pool.query('SELECT pg_notify($1, $2)', [SYNC_CHANNEL, JSON.stringify({ table: 'manual', op: 'sync', id: kp.settings.instanceId })]);
  const deadline = Date.now() + LEADER_WAIT_MS;
  for (;;) {
    const { rows: s } = await pool.query<{ at: Date | null; status: string | null; trigger: string | null; error: { message?: string } | null; leader: string | null }>(
      'SELECT last_attempt_at AS at, last_status AS status, last_trigger AS trigger, last_error AS error, leader_instance AS leader FROM sync_state WHERE id = 1',
    );
    const st = s[0];
    if (st?.at && st.at > asked) {
      out(JSON.stringify({ dryRun: false, renderedBy: st.leader, outcome: { status: st.status, trigger: st.trigger, ...(st.error ? { error: st.error } : {}) } }, null, 2));
      return st.status === 'failed' ? 1 : 0;
    }
    if (Date.now() > deadline) throw new Error(`instance ${st?.leader ?? '(unknown)'} leads and renders, and did not render within ${LEADER_WAIT_MS / 1000} s of being asked: see its log`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
