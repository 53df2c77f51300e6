import type { BaseConfig } from './base-config';
import { validateStaged, type CheckResult } from './check';
import type { DesiredModel, DesiredState } from './desired-state';
import { lineDiff } from './diff';
import { maskConfigText, maskEnvText } from './masking';
import { render, RenderRefused, sha256, type Rendered } from './renderer';
import { CONFIG_FILE, ENV_FILE } from './writer';

/**
 * The heavy, pure parts of a render, run on the sync worker thread (see SyncWorker) so that the
 * event loop that answers HTTP never waits on them: rendering thousands of deployments, parsing the
 * staged config.yaml again, masking and diffing a preview.
 */

/**
 * The desired state as it crosses to the worker thread: the models (the bulk) as JSON text in
 * slices, so that no single step of the copy holds up the event loop (a structured clone of 5,000
 * models is one 20-30 ms step). Models are plain JSON data (text, numbers, jsonb).
 */
export type PackedState = Omit<DesiredState, 'models'> & { modelSlices: string[] };

const MODELS_PER_SLICE = 500;

/** Packs `state`, yielding to the event loop between slices. */
export async function packState(state: DesiredState): Promise<PackedState> {
  const { models, ...rest } = state;
  const modelSlices: string[] = [];
  for (let i = 0; i < models.length; i += MODELS_PER_SLICE) {
    if (i > 0) await new Promise<void>((resolve) => setImmediate(resolve));
    modelSlices.push(JSON.stringify(models.slice(i, i + MODELS_PER_SLICE)));
  }
  return { ...rest, modelSlices };
}

function unpackState(packed: PackedState): DesiredState {
  const { modelSlices, ...rest } = packed;
  return { ...rest, models: modelSlices.flatMap((s) => JSON.parse(s) as DesiredModel[]) };
}

export type RenderTaskResult = { ok: true; rendered: Rendered; managedDigest?: string } | { ok: false; refused: string };

export interface PreviewInput {
  wanted: Record<string, string>;
  onDisk: Record<string, string>;
  /** Values masked wherever a whole token equals one. */
  secrets: string[];
}

export interface PreviewOutput {
  changed: Record<string, boolean>;
  diff: Record<string, string>;
  config: string;
  env: string;
}

/** A digest of what the litellm-api reloader manages (fingerprints, never values). */
export function managedStateDigest(state: DesiredState): string {
  return sha256(
    JSON.stringify({
      // Everything that decides what litellm-api sends: a key's state and an approval revoked change
      // the eligible deployments without changing a file in this mode.
      keys: state.keys.map((k) => [k.name, k.envVar, k.fingerprint, k.state ?? 'active']),
      providers: state.providers,
      models: state.models,
      approvals: [...state.approvals].map((a) => `${a.keyName}\u0000${a.destination}`).sort(),
    }),
  );
}

function renderTask(input: { state: PackedState; base: BaseConfig; modelsInConfig: boolean }): RenderTaskResult {
  try {
    const state = unpackState(input.state);
    const rendered = render(state, input.base, { modelsInConfig: input.modelsInConfig });
    return { ok: true, rendered, ...(input.modelsInConfig ? {} : { managedDigest: managedStateDigest(state) }) };
  } catch (err) {
    // A refusal is an answer about the data (say what to change), not a fault of the renderer.
    if (err instanceof RenderRefused) return { ok: false, refused: err.message };
    throw err;
  }
}

function checkTask(input: { configText: string | undefined; envText: string; env: Record<string, string> }): CheckResult {
  return validateStaged(input.configText, input.envText, input.env);
}

function previewTask(input: PreviewInput): PreviewOutput {
  const secrets = new Set(input.secrets);
  const mask = (name: string, text: string): string => (name === ENV_FILE ? maskEnvText(text) : maskConfigText(text, secrets));
  const changed: Record<string, boolean> = {};
  const diff: Record<string, string> = {};
  for (const name of [CONFIG_FILE, ENV_FILE]) {
    const before = input.onDisk[name] ?? '';
    const after = input.wanted[name] ?? '';
    changed[name] = before !== after;
    diff[name] = changed[name] ? lineDiff(mask(name, before), mask(name, after)) : '';
  }
  return { changed, diff, config: mask(CONFIG_FILE, input.wanted[CONFIG_FILE] ?? ''), env: mask(ENV_FILE, input.wanted[ENV_FILE] ?? '') };
}

export const SYNC_TASKS = {
  render: renderTask,
  check: checkTask,
  preview: previewTask,
};

export type SyncTasks = typeof SYNC_TASKS;
export type SyncTaskName = keyof SyncTasks;
