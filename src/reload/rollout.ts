/**
 * Rolling a reload across several LiteLLM targets without leaving a load balancer with none in
 * service: a target counts as done only once it is ready and has stayed ready for a settle time
 * (the time a balancer needs to see it back: check interval x rise), as Kubernetes'
 * `minReadySeconds` and Swarm's `update_config.delay` do. Only then is the next one stopped.
 */

/** Where one target is in a reload, as the sync status shows it. */
export type TargetPhase =
  | 'pending'
  | 'preparing'
  | 'stopping'
  | 'starting'
  | 'waiting-ready'
  | 'settling'
  | 'done'
  | 'failed'
  | 'skipped'
  | 'rolled-back';

/** Told of every phase change while a reload runs (the reload queue shows it in the sync status). */
export interface RolloutProgress {
  /** The targets of this run, in the order they are reloaded (each starts `pending`). */
  plan(targets: string[]): void;
  phase(target: string, phase: TargetPhase, detail?: { outageMs?: number }): void;
}

/** A progress that goes nowhere, for reloaders called without one. */
export const NO_PROGRESS: RolloutProgress = { plan: () => undefined, phase: () => undefined };

export interface SettleOptions {
  /** How long the target must stay ready without a failed check. */
  settleMs: number;
  /** From the start of the settle: a target that never stays ready that long fails. */
  timeoutMs: number;
  /** Between checks. */
  intervalMs: number;
  /** One readiness check: undefined when ready, else what was seen. */
  check: () => Promise<string | undefined>;
  /** Told when a failed check starts the settle over. */
  onUnready?: (seen: string) => void;
}

export class SettleError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SettleError';
  }
}

/**
 * Resolves once `check` has passed for `settleMs` without a failure in between (the target was
 * ready when called: the clock starts then). A failed check starts the settle over from the next
 * passing one; a target still not settled at `timeoutMs` rejects with what was seen last.
 */
export async function settle(opts: SettleOptions): Promise<void> {
  const started = Date.now();
  const deadline = started + opts.timeoutMs;
  let readySince: number | undefined = started;
  let lastProblem: string | undefined;
  for (;;) {
    const now = Date.now();
    if (readySince !== undefined && now - readySince >= opts.settleMs) return;
    if (now >= deadline) {
      throw new SettleError(`did not stay ready for ${opts.settleMs} ms within ${opts.timeoutMs} ms (last failed check: ${lastProblem ?? 'none'})`);
    }
    const wait = readySince === undefined ? opts.intervalMs : Math.min(opts.intervalMs, readySince + opts.settleMs - now);
    await new Promise((r) => setTimeout(r, Math.max(1, Math.min(wait, deadline - now))));
    const problem = await opts.check();
    if (problem === undefined) {
      readySince ??= Date.now();
    } else {
      if (readySince !== undefined) opts.onUnready?.(problem);
      lastProblem = problem;
      readySince = undefined;
    }
  }
}
