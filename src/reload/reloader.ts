import type { ReloadKind } from '../config';
import type { DesiredState } from '../sync/desired-state';
import type { RolloutProgress } from './rollout';

export type ReloadStatus = 'ok' | 'failed' | 'skipped';

export interface TargetResult {
  /** Container name, `command`, or the LiteLLM URL. */
  target: string;
  status: ReloadStatus;
  startedAt: Date;
  finishedAt: Date;
  error?: string;
  /** How long this target did not serve: from its stop (or its reload command) until it was ready again. */
  outageMs?: number;
}

export interface ReloadResult {
  status: ReloadStatus;
  targets: TargetResult[];
  error?: string;
}

/** What a reloader is handed after a revision changed a file. */
export interface ReloadRequest {
  revision: number;
  outputDir: string;
  configPath: string;
  envPath: string;
  /** The rendered env file as VAR -> value (secrets: never log them). */
  env: Record<string, string>;
  /** The desired state the files were rendered from (for `litellm-api`). */
  state: DesiredState;
  /** Puts the previous files back (their bytes are kept in memory), for a reload that must be rolled back. */
  restorePrevious(): Promise<boolean>;
  /** What caused the render (`reconcile`, `notify+reconcile`, ...): a reconcile re-sends what cannot be compared. */
  trigger?: string;
  /** Told of each target's phase while the reload runs. */
  progress?: RolloutProgress;
}

export interface Reloader {
  readonly kind: ReloadKind;
  reload(req: ReloadRequest): Promise<ReloadResult>;
  stop?(): Promise<void>;
}
