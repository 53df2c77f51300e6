import type { RenderWarning, SkippedDeployment } from './renderer';

/** What caused a render. Several folded into one render are joined with `+`. */
export type Trigger = 'start' | 'notify' | 'reconnect' | 'reconcile' | 'manual' | 'leader' | 'cli';

/** `record`: the revision and the wish to reload could not be recorded before the swap (the database). */
export type FailureStage = 'state' | 'base_config' | 'render' | 'check' | 'record' | 'write';

/** One render that went through (whether or not a file changed). */
export interface RenderResult {
  trigger: string;
  changed: boolean;
  changedFiles: string[];
  /** The revision recorded for a change; null when nothing changed (or it could not be recorded). */
  revision: number | null;
  configSha256: string;
  /** Internal only (a plain hash of secrets): the API shows envDigest. */
  envSha256: string;
  /** Keyed digest of litellm.env, fit to show. */
  envDigest: string;
  /** Platform keys whose env var, version or value changed since the previous revision. */
  changedKeys: string[];
  /** Files that differed on disk from what keyplane last wrote (edited by hand, or deleted). */
  drift: string[];
  deployments: number;
  skipped: SkippedDeployment[];
  warnings: RenderWarning[];
  durationMs: number;
}

/** A render that stopped before the swap: the live files are as they were. Secrets are masked. */
export interface RenderFailure {
  trigger: string;
  stage: FailureStage;
  message: string;
  stderrTail?: string;
  at: string;
}

export interface SyncEvents {
  'render:done': RenderResult;
  'render:failed': RenderFailure;
  'leader:acquired': { instance: string };
  'leader:lost': { instance: string; reason: string };
  'watcher:connected': { reconnect: boolean };
  'watcher:disconnected': { attempt: number };
  'watcher:notification': { table: string; op: string; id: string };
}
